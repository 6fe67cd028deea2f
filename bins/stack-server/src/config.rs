//! Configuration: command-line flags, then environment variables, then an
//! optional TOML file, then defaults. The README's configuration table is the
//! documentation of this file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(
    name = "stack-server",
    version,
    about = "STACK: trust infrastructure for AI agents (REST + MCP server)"
)]
pub struct Cli {
    #[command(flatten)]
    pub opts: Opts,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage operators (tenants) in the configured database.
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage the passport signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new signing key; older keys keep verifying until every
    /// passport they signed is past its refresh window.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum OperatorsCommand {
    /// Create an operator and print its API key once.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct Opts {
    /// Address to listen on.
    #[arg(long, env = "STACK_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Directory for the embedded SQLite database and local key files.
    #[arg(long, env = "STACK_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` to use PostgreSQL instead of the embedded SQLite file.
    #[arg(
        long,
        env = "STACK_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `stack_http=debug`.
    #[arg(long, env = "STACK_LOG", global = true)]
    pub log: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "STACK_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Public base URL of this server (OAuth issuer), e.g. `https://stack.example.com`.
    #[arg(long, env = "STACK_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Optional TOML configuration file.
    #[arg(long, env = "STACK_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// `iss` of the passports this deployment signs.
    #[arg(long, env = "STACK_PASSPORT_ISSUER", global = true)]
    pub passport_issuer: Option<String>,
    /// Revocation bus between nodes: `inprocess`, `postgres` or `redis`.
    #[arg(long, env = "STACK_BUS", global = true)]
    pub bus: Option<String>,
    /// Redis URL for `--bus redis`.
    #[arg(long, env = "STACK_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
}

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log: Option<String>,
    pub log_format: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub mcp_allowed_hosts: Option<Vec<String>>,
    pub mcp_allowed_origins: Option<Vec<String>>,
    pub passport_issuer: Option<String>,
    pub bus: Option<String>,
    pub redis_url: Option<String>,
    pub public_url: Option<String>,
    pub oauth_registrations_per_hour: Option<u64>,
    /// Monthly scan allowance of free-tier operators (default 1,000).
    pub scan_quota_free: Option<u64>,
    /// Monthly proxied calls of free-tier operators (default 5,000).
    pub proxy_quota_free: Option<u64>,
    /// Largest proxied request or response body (default 10 MiB).
    pub proxy_max_bytes: Option<usize>,
    /// Upstream time limit per proxied call, seconds (default 30).
    pub proxy_timeout_seconds: Option<u64>,
    /// Tokio worker threads (default: one per core, one fewer on the
    /// embedded SQLite database).
    pub worker_threads: Option<usize>,
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<stack_core::Secret<String>>,
    pub log: String,
    pub log_json: bool,
    pub max_body_bytes: usize,
    pub mcp_allowed_hosts: Vec<String>,
    pub mcp_allowed_origins: Vec<String>,
    /// The URL clients reach this server at (OAuth issuer and resource
    /// identifiers); `None` means `http://<bound address>`.
    pub public_url: Option<String>,
    pub oauth_registrations_per_hour: u64,
    /// Monthly scan allowance of free-tier operators.
    pub scan_quota_free: u64,
    /// Monthly proxied calls of free-tier operators.
    pub proxy_quota_free: u64,
    /// Largest proxied request or response body, bytes.
    pub proxy_max_bytes: usize,
    /// Upstream time limit per proxied call.
    pub proxy_timeout: std::time::Duration,
    /// Tokio worker threads.
    pub worker_threads: usize,
    /// The master key (32 bytes, base64) from `STACK_MASTER_KEY`; when unset,
    /// `<data_dir>/master.key` is used (created on first start, mode 0600).
    pub master_key: Option<stack_core::Secret<String>>,
    pub passport_issuer: String,
    pub bus: Bus,
    /// `STACK_PROXY_ALLOW_PRIVATE`: non-public CIDRs the proxy may reach.
    pub proxy_allow_private: Vec<stack_proxy::Cidr>,
    /// `STACK_PROXY_ALLOW_HTTP=1`: plain-http upstreams (tests, private deployments).
    pub proxy_allow_http: bool,
    /// `STACK_PROXY_RESOLVE=host=ip,…`: fixed addresses instead of DNS.
    pub proxy_resolve: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    /// `STACK_PROXY_CA_FILE`: PEM certificates trusted for upstream TLS
    /// besides the web PKI roots (a private CA; tests).
    pub proxy_extra_roots: Vec<stack_egress::CertificateDer<'static>>,
}

/// Which revocation bus this node uses.
#[derive(Debug, Clone)]
pub enum Bus {
    InProcess,
    Postgres(stack_core::Secret<String>),
    Redis(stack_core::Secret<String>),
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Config {
    pub fn resolve(opts: &Opts) -> anyhow::Result<Self> {
        let file = match &opts.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let listen = match opts.listen.or(file.listen) {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let database_url = opts
            .database_url
            .clone()
            .or(file.database_url)
            .filter(|u| !u.is_empty());
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            bail!(
                "STACK_DATABASE_URL must be a postgres:// URL (leave it unset for the embedded SQLite database)"
            );
        }
        let log_format = opts
            .log_format
            .clone()
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        let log_json = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("log format must be text or json, not {other:?}"),
        };
        let mcp_defaults = stack_mcp::McpConfig::default();
        let public_url = opts
            .public_url
            .clone()
            .or(file.public_url)
            .filter(|u| !u.is_empty())
            .map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("public_url must be an http:// or https:// URL, not {u:?}");
        }
        let bus = match opts
            .bus
            .clone()
            .or(file.bus)
            .as_deref()
            .unwrap_or("inprocess")
        {
            "inprocess" | "in-process" => Bus::InProcess,
            "postgres" => match &database_url {
                Some(u) => Bus::Postgres(stack_core::Secret::new(u.clone())),
                None => bail!("STACK_BUS=postgres needs STACK_DATABASE_URL (PostgreSQL)"),
            },
            "redis" => match opts.redis_url.clone().or(file.redis_url) {
                Some(u) => Bus::Redis(stack_core::Secret::new(u)),
                None => bail!("STACK_BUS=redis needs STACK_REDIS_URL"),
            },
            other => bail!("STACK_BUS must be inprocess, postgres or redis, not {other:?}"),
        };
        let master_key = std::env::var("STACK_MASTER_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .map(stack_core::Secret::new);
        let passport_issuer = opts
            .passport_issuer
            .clone()
            .or(file.passport_issuer)
            .unwrap_or_else(|| "getstack.run".into());
        let proxy_allow_private = match std::env::var("STACK_PROXY_ALLOW_PRIVATE") {
            Ok(v) if !v.trim().is_empty() => stack_proxy::parse_cidr_list(&v)
                .map_err(|e| anyhow::anyhow!("STACK_PROXY_ALLOW_PRIVATE: {e}"))?,
            _ => Vec::new(),
        };
        let proxy_allow_http =
            std::env::var("STACK_PROXY_ALLOW_HTTP").is_ok_and(|v| v == "1" || v == "true");
        let mut proxy_resolve: std::collections::BTreeMap<String, Vec<std::net::IpAddr>> =
            Default::default();
        if let Ok(v) = std::env::var("STACK_PROXY_RESOLVE") {
            for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (host, ip) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("STACK_PROXY_RESOLVE entries are host=ip"))?;
                let ip: std::net::IpAddr = ip.parse().map_err(|_| {
                    anyhow::anyhow!("STACK_PROXY_RESOLVE: {ip:?} is not an IP address")
                })?;
                proxy_resolve
                    .entry(host.to_ascii_lowercase())
                    .or_default()
                    .push(ip);
            }
        }
        let proxy_extra_roots = match std::env::var("STACK_PROXY_CA_FILE") {
            Ok(path) if !path.trim().is_empty() => {
                let pem = std::fs::read(path.trim())
                    .with_context(|| format!("reading STACK_PROXY_CA_FILE {path}"))?;
                stack_egress::parse_pem_certificates(&pem)
                    .map_err(|e| anyhow::anyhow!("STACK_PROXY_CA_FILE: {e}"))?
            }
            _ => Vec::new(),
        };
        let proxy_max_bytes = match env_parse::<usize>("STACK_PROXY_MAX_BYTES")? {
            Some(v) => v,
            None => file
                .proxy_max_bytes
                .unwrap_or(stack_app::proxy::ProxySettings::default().max_body_bytes),
        };
        if proxy_max_bytes == 0 {
            anyhow::bail!("proxy_max_bytes must be at least 1");
        }
        let proxy_timeout_seconds = match env_parse::<u64>("STACK_PROXY_TIMEOUT_SECONDS")? {
            Some(v) => v,
            None => file.proxy_timeout_seconds.unwrap_or(30),
        };
        if !(1..=600).contains(&proxy_timeout_seconds) {
            anyhow::bail!("proxy_timeout_seconds must be between 1 and 600");
        }
        let proxy_timeout = std::time::Duration::from_secs(proxy_timeout_seconds);
        let worker_threads = match env_parse::<usize>("STACK_WORKER_THREADS")? {
            Some(v) => v,
            None => file
                .worker_threads
                .unwrap_or_else(|| default_worker_threads(database_url.is_none())),
        };
        if !(1..=1024).contains(&worker_threads) {
            anyhow::bail!("worker_threads must be between 1 and 1024");
        }
        Ok(Self {
            worker_threads,
            proxy_allow_private,
            proxy_allow_http,
            proxy_resolve,
            proxy_extra_roots,
            master_key,
            passport_issuer,
            bus,
            listen,
            data_dir: opts
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./.stack")),
            database_url: database_url.map(stack_core::Secret::new),
            log: opts
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info,rmcp=warn".into()),
            log_json,
            max_body_bytes: file.max_body_bytes.unwrap_or(1024 * 1024),
            mcp_allowed_hosts: file.mcp_allowed_hosts.unwrap_or(mcp_defaults.allowed_hosts),
            mcp_allowed_origins: file
                .mcp_allowed_origins
                .unwrap_or(mcp_defaults.allowed_origins),
            public_url,
            oauth_registrations_per_hour: file
                .oauth_registrations_per_hour
                .unwrap_or_else(|| stack_app::oauth::OAuthConfig::default().registrations_per_hour),
            scan_quota_free: file
                .scan_quota_free
                .unwrap_or(stack_app::TierQuotas::SCAN.free),
            proxy_quota_free: file
                .proxy_quota_free
                .unwrap_or(stack_app::TierQuotas::PROXY.free),
            proxy_max_bytes,
            proxy_timeout,
        })
    }
}

/// One Tokio worker per core; one fewer on SQLite (at least one), whose
/// statements run on sqlx's own per-connection threads beside the workers:
/// with a worker for every core as well, each call's hand-offs wake a
/// parked worker on the other core (measured on 2 cores: one worker cuts the
/// proxy's CPU per call by ≈ 20 % and its added median by ≈ 12 %;
/// `docs/benchmarks.md`, proxy round 4).
fn default_worker_threads(sqlite: bool) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if sqlite {
        cores.saturating_sub(1).max(1)
    } else {
        cores
    }
}

/// A numeric environment variable: `None` when unset or empty, an error
/// naming the variable when it does not parse.
fn env_parse<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name}: {v:?} is not a valid number")),
        _ => Ok(None),
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::default_worker_threads;

    #[test]
    fn sqlite_leaves_a_core_to_its_threads_and_never_goes_below_one() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(default_worker_threads(false), cores);
        assert_eq!(default_worker_threads(true), cores.saturating_sub(1).max(1));
        assert!(default_worker_threads(true) >= 1);
    }
}
