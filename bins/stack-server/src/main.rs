//! `stack-server`: the composition root. Reads configuration, opens the
//! database (running migrations), creates the first operator on a fresh
//! database, and serves REST (`/v1`), MCP (`/mcp`) and health endpoints on one
//! listener until SIGTERM or Ctrl-C, then drains in-flight requests.

mod config;
mod egress;
mod keys;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::serve::ListenerExt;
use clap::Parser;
use stack_app::{App, AppConfig, SystemClock};
use stack_crypto::SystemRandom;
use stack_http::{AuthLayerConfig, HttpConfig, require_principal};
use stack_store::{Db, DbConfig};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::{Bus, Cli, Command, Config, KeysCommand, OperatorsCommand};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The configuration decides the runtime's size, so it is read first.
    let started = Config::resolve(&cli.opts).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .enable_all()
            .build()
            .context("starting the Tokio runtime")?;
        runtime.block_on(run(cli, config))
    });
    match started {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "stack-server failed");
            eprintln!("stack-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    init_logging(&config)?;
    let db = open_database(&config).await?;
    let command = cli.command.unwrap_or(Command::Serve);
    // The server binds first so that, with port 0 and no public_url, the
    // OAuth issuer names the port actually bound.
    let listener = match command {
        Command::Serve => Some(
            tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?,
        ),
        _ => None,
    };
    let bound = match &listener {
        Some(l) => l.local_addr().context("reading the bound address")?,
        None => config.listen,
    };
    let app_config = AppConfig {
        oauth: stack_app::oauth::OAuthConfig {
            issuer: config
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{bound}")),
            registrations_per_hour: config.oauth_registrations_per_hour,
        },
        passport_issuer: config.passport_issuer.clone(),
        node_id: node_id(),
        scan: stack_app::scan::ScanSettings {
            quotas: stack_app::TierQuotas {
                free: config.scan_quota_free,
                ..stack_app::TierQuotas::SCAN
            },
            ..stack_app::scan::ScanSettings::default()
        },
        proxy: stack_app::proxy::ProxySettings {
            quotas: stack_app::TierQuotas {
                free: config.proxy_quota_free,
                ..stack_app::TierQuotas::PROXY
            },
            max_body_bytes: config.proxy_max_bytes,
        },
        ..AppConfig::default()
    };
    let app = App::new(
        Arc::new(db.clone()),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        app_config,
    );
    if matches!(command, Command::Serve | Command::Keys { .. }) {
        let master = keys::load_master_key(&config)?;
        app.init_passport_keys(master)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    if matches!(command, Command::Serve) {
        // Compile the default content scanner in the background (~0.1 s of
        // CPU) so the first scan does not pay for it.
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = app.warm_scanner().await {
                tracing::warn!(code = e.code.as_str(), "content scanner warm-up failed");
            }
        });
    }
    match (command, listener) {
        (Command::Serve, Some(listener)) => serve(config, db, app, listener).await,
        (
            Command::Keys {
                command: KeysCommand::Rotate,
            },
            _,
        ) => {
            let rotated = app
                .rotate_passport_key(None)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            eprintln!("rotated the passport signing key: {rotated}");
            Ok(())
        }
        (Command::Serve, None) => anyhow::bail!("no listener"),
        (Command::Migrate, _) => {
            tracing::info!(backend = db.backend_name(), "migrations applied");
            Ok(())
        }
        (
            Command::Operators {
                command: OperatorsCommand::Create { name },
            },
            _,
        ) => {
            let created = app.create_operator(&name).await?;
            eprintln!(
                "created operator {} ({}); its API key follows, shown once:",
                created.operator.name, created.operator.id
            );
            print_key(created.api_key.expose());
            Ok(())
        }
    }
}

/// This node's name on the revocation bus: host and process, plus a random
/// suffix so restarts are told apart.
fn node_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
    let suffix = stack_crypto::random_token(&SystemRandom::new(), 4).unwrap_or_default();
    format!("{host}-{}-{suffix}", std::process::id())
}

/// Every 30 s, reports enforced passports that died without a checkpoint.
fn spawn_silence_sweeper(app: App, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {
                    match app.sweep_checkpoint_silence().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(count = n, "reported checkpoint silence"),
                        Err(e) => tracing::warn!(error = %e.message, "checkpoint silence sweep failed"),
                    }
                }
            }
        }
    });
}

/// Starts the revocation bus and brings this node's revocation index in sync.
async fn start_bus(config: &Config, app: &App, cancel: &CancellationToken) -> anyhow::Result<()> {
    let bus_config = match &config.bus {
        Bus::InProcess => stack_bus::BusConfig::InProcess,
        Bus::Postgres(url) => stack_bus::BusConfig::Postgres { url: url.clone() },
        Bus::Redis(url) => stack_bus::BusConfig::Redis { url: url.clone() },
    };
    let bus = stack_bus::start(bus_config, node_id(), app.revocation_sink(), cancel.clone())
        .await
        .map_err(|e| anyhow::anyhow!("revocation bus: {e}"))?;
    app.set_revocation_bus(bus);
    // The in-process bus has no connection to (re)establish: sync now.
    if matches!(config.bus, Bus::InProcess) {
        app.revocation_sink()
            .resync()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    Ok(())
}

#[allow(clippy::print_stdout)] // The one place a key is shown: stdout, once, never the log.
fn print_key(key: &str) {
    println!("{key}");
}

#[allow(clippy::print_stdout)]
fn print_first_operator(name: &str, id: &str, key: &str) {
    println!(
        "\n==================================================================\n\
         STACK created the first operator \"{name}\" ({id}).\n\
         Its API key is shown only now; only a hash of it is stored:\n\n    {key}\n\n\
         Use it as: Authorization: Bearer <key>\n\
         ==================================================================\n"
    );
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid log filter {:?}", config.log))?;
    // Colours only on a terminal: a log piped to a file or a collector
    // gets plain `key=value` fields, not escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = if config.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))
}

async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let db_config = match &config.database_url {
        Some(url) => DbConfig::Postgres { url: url.clone() },
        None => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("creating data directory {}", config.data_dir.display())
            })?;
            restrict_permissions(&config.data_dir);
            DbConfig::Sqlite {
                path: config.data_dir.join("stack.db"),
            }
        }
    };
    let db = Db::connect(&db_config)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    tracing::info!(backend = db.backend_name(), "database ready");
    Ok(db)
}

#[cfg(unix)]
fn restrict_permissions(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(error = %e, dir = %dir.display(), "could not restrict data directory permissions");
    }
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &std::path::Path) {}

fn build_router(config: &Config, app: App, cancel: &CancellationToken) -> Router {
    let http = HttpConfig {
        max_body_bytes: config.max_body_bytes,
        proxy_max_body_bytes: config
            .proxy_max_bytes
            .saturating_mul(2)
            .saturating_add(64 * 1024),
    };
    let mcp_config = stack_mcp::McpConfig {
        allowed_hosts: config.mcp_allowed_hosts.clone(),
        allowed_origins: config.mcp_allowed_origins.clone(),
        cancel: cancel.clone(),
    };
    let mcp_auth = AuthLayerConfig {
        app: app.clone(),
        www_authenticate: stack_http::mcp_www_authenticate(&app),
        audience: stack_app::oauth::Audience::Mcp,
    };
    let mcp = Router::new()
        .nest_service("/mcp", stack_mcp::service(app.clone(), &mcp_config))
        .layer(axum::middleware::from_fn_with_state(
            mcp_auth,
            require_principal,
        ));
    #[cfg(feature = "conformance-fixtures")]
    let mcp = conformance::with_default_bearer(mcp);
    stack_http::router(app, http)
        .merge(mcp)
        .layer(CatchPanicLayer::custom(stack_http::panic_response))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // Path only: query strings may carry tokens in later flows.
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
            }),
        )
}

/// Test-only plumbing for the official MCP conformance suite, which cannot
/// send an `Authorization` header (feature `conformance-fixtures`).
#[cfg(feature = "conformance-fixtures")]
mod conformance {
    use axum::Router;
    use axum::extract::Request;
    use axum::http::{HeaderValue, header};

    /// Adds `Authorization: Bearer $STACK_CONFORMANCE_BEARER` to requests
    /// that carry none.
    pub fn with_default_bearer(router: Router) -> Router {
        let Some(value) = std::env::var("STACK_CONFORMANCE_BEARER")
            .ok()
            .and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok())
        else {
            tracing::warn!("conformance-fixtures build without STACK_CONFORMANCE_BEARER");
            return router;
        };
        tracing::warn!(
            "conformance-fixtures build: /mcp requests without credentials act as the configured key"
        );
        router.layer(axum::middleware::map_request(move |mut req: Request| {
            let value = value.clone();
            async move {
                if !req.headers().contains_key(header::AUTHORIZATION) {
                    req.headers_mut().insert(header::AUTHORIZATION, value);
                }
                req
            }
        }))
    }
}

async fn serve(
    config: Config,
    db: Db,
    app: App,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    if let Some(created) = app.bootstrap_first_operator().await? {
        print_first_operator(
            &created.operator.name,
            &created.operator.id,
            created.api_key.expose(),
        );
        tracing::info!(operator_id = %created.operator.id, "created the first operator");
    }
    let cancel = CancellationToken::new();
    start_bus(&config, &app, &cancel).await?;
    app.set_egress(egress::build(&config)?);
    app.set_client_metadata_egress(
        egress::build_client_metadata(&config)?,
        config.proxy_allow_http,
    );
    spawn_silence_sweeper(app.clone(), cancel.clone());
    let router = build_router(&config, app, &cancel);
    // With port 0 the OS picks one: report the address actually bound.
    let bound = listener.local_addr().context("reading the bound address")?;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // Register for SIGTERM before announcing the address, so a supervisor
    // (or a test) that stops the server as soon as it listens gets a
    // graceful shutdown, not the signal's default action.
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(not(unix))]
    let term = ();
    tracing::info!(address = %bound, "listening on http://{bound}");
    let shutdown = {
        let cancel = cancel.clone();
        async move {
            shutdown_signal(term).await;
            tracing::info!("shutdown requested: finishing in-flight requests");
            cancel.cancel();
        }
    };
    // The peer address feeds the per-address limit on OAuth registrations.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("server error")?;
    db.close()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
type TermSignal = std::io::Result<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type TermSignal = ();

async fn shutdown_signal(term: TermSignal) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match term {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = {
        let () = term;
        std::future::pending::<()>()
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
