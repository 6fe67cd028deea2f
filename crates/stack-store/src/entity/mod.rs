//! sea-orm entities: one module per table. Rows are storage shapes; the
//! conversions to application types live in `convert`.

pub mod agent;
pub mod api_key;
pub mod audit_entry;
pub mod audit_head;
pub mod operator;
