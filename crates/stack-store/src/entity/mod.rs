//! sea-orm entities: one module per table. Rows are storage shapes; the
//! conversions to application types live in `convert`.

pub mod agent;
pub mod api_key;
pub mod audit_entry;
pub mod audit_head;
pub mod checkout;
pub mod checkpoint;
pub mod connection;
pub mod detector_config;
pub mod grant;
pub mod intent_approval;
pub mod mission;
pub mod oauth_client;
pub mod oauth_code;
pub mod oauth_grant;
pub mod oauth_request;
pub mod oauth_token;
pub mod operator;
pub mod operator_key;
pub mod passport;
pub mod proxy_operation;
pub mod review;
pub mod scan_usage;
pub mod security_event;
pub mod signing_key;
pub mod usage_meter;
