//! `poststelle`: the homeserver binary.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use poststelle_server::{
    cli::{Cli, Command, ConfigCommand, KeysCommand, UserCommand},
    config::Config,
    database::Database,
    http,
    service::{notifier::Topic, signing, tokens},
    state::AppState,
    storage::Storage,
};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("poststelle: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poststelle: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("poststelle: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// ruma logs every authorised event at `info` and opens a span per JSON node when it evaluates
/// push rules; that costs a third of `/sync`'s time and says nothing to an operator. Quiet unless
/// the directive names ruma itself.
fn quiet_dependencies(directive: &str) -> String {
    if directive.contains("ruma") {
        directive.to_owned()
    } else {
        format!("{directive},ruma_common=warn,ruma_state_res=warn")
    }
}

fn init_tracing(config: &Config) {
    let from_env = std::env::var("RUST_LOG").ok().filter(|d| !d.is_empty());
    let directive = quiet_dependencies(from_env.as_deref().unwrap_or(&config.log));
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new(quiet_dependencies("info")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = Database::open(&config).await?;
            tracing::info!(database = %db.description, "migrations applied");
            db.close().await;
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check } => {
            let mut shown = config.clone();
            if !shown.registration.shared_secret.is_empty() {
                shown.registration.shared_secret = "<set>".into();
            }
            if !shown.login.jwt.secret.is_empty() {
                shown.login.jwt.secret = "<set>".into();
            }
            if !shown.database.url.is_empty() {
                shown.database.url = redact_url(&shown.database.url);
            }
            println!("{}", serde_json::to_string_pretty(&shown)?);
            println!("# configuration OK");
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate } => {
            let db = Database::open(&config).await?;
            let storage = Storage::new(db.pool.clone());
            let result = signing::rotate(&storage).await;
            db.close().await;
            println!("new signing key {}", result?);
            Ok(())
        }
        Command::User { command: UserCommand::Create { name, password, admin } } => {
            let db = Database::open(&config).await?;
            let result = create_user(&config, &db, &name, password, admin).await;
            db.close().await;
            result
        }
    }
}

async fn create_user(
    config: &Config,
    db: &Database,
    name: &str,
    password: Option<String>,
    admin: bool,
) -> anyhow::Result<()> {
    let storage = Storage::new(db.pool.clone());
    let key = signing::load_or_generate(&storage).await?;
    let mls_signer = poststelle_server::service::mls::load_server_signer(&storage, &config.server_name).await?;
    let state = AppState::new(config.clone(), storage, key, mls_signer)?;
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (tokens::random_alphanumeric(20), true),
    };
    let user_id = state.accounts.create(&name.to_lowercase(), Some(password.clone()), admin, None).await?;
    println!("created {user_id}{}", if admin { " (admin)" } else { "" });
    if generated {
        println!("password: {password}");
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(server_name = %config.server_name, data_dir = %config.data_dir.display(), "starting Poststelle {}", env!("CARGO_PKG_VERSION"));
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let db = Database::open(&config).await?;
    tracing::info!(database = %db.description, "database ready");

    let storage = Storage::new(db.pool.clone());
    let key = signing::load_or_generate(&storage).await?;
    tracing::info!(key_id = %key.key_id(), "signing key loaded");
    let mls_signer = poststelle_server::service::mls::load_server_signer(&storage, &config.server_name).await?;
    let state = AppState::new(config.clone(), storage, key, mls_signer)?;
    state.allow_list.start(state.federation_client.tls_config()).await?;
    state.notifier.spawn_listener(db.pool.clone(), state.typing.clone());
    state.push.spawn(state.notifier.clone());
    state.presence.spawn();
    let sender = tokio::spawn(state.federation.clone().run_sender(state.notifier.clone()));
    let welcomes = tokio::spawn(state.mls.clone().run_welcome_dispatcher(state.notifier.subscribe(Topic::Welcomes)));
    let listener = TcpListener::bind(config.listeners.client.addr)
        .await
        .with_context(|| format!("binding the client listener to {}", config.listeners.client.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "client API listening (http)");
    let tls = http::tls::server_config(&config)?;
    let federation_listener = http::tls::TlsListener::bind(config.listeners.federation.addr, tls)
        .await
        .with_context(|| format!("binding the federation listener to {}", config.listeners.federation.addr))?;
    tracing::info!(addr = %axum::serve::Listener::local_addr(&federation_listener)?, "federation API listening (TLS)");
    let federation_app = http::federation_router(state.clone()).into_make_service();
    let federation = tokio::spawn(async move {
        axum::serve(federation_listener, federation_app).with_graceful_shutdown(shutdown_signal()).await
    });

    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let app = http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Answers go out at once rather than waiting for the client's acknowledgement.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
    housekeeping.abort();
    sender.abort();
    welcomes.abort();
    federation.abort();
    tracing::info!("shutting down");
    db.close().await;
    served.context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
}

/// Periodic clean-up of expired short-lived rows.
async fn housekeeping(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(600));
    loop {
        interval.tick().await;
        match state.storage.uiaa.purge_expired().await {
            Ok(n) if n > 0 => tracing::info!(sessions = n, "purged expired UIA sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
        match state.storage.media.purge_expired_reservations().await {
            Ok(n) if n > 0 => tracing::info!(media_ids = n, "dropped expired media reservations"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn redact_url(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| rest.split_once('@').map(|(_, host)| (scheme, host))) {
        Some((scheme, host)) => format!("{scheme}://<credentials>@{host}"),
        None => url.to_owned(),
    }
}
