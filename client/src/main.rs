//! `poststelle-client`: talk to an MLS mailbox from a shell, a script or a Fachverfahren.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use poststelle_client::{Client, ClientError, Received};
use poststelle_mls::Suite;
use serde_json::json;

#[derive(Parser)]
#[command(name = "poststelle-client", about = "A command-line client for Poststelle's MLS rooms")]
struct Cli {
    /// The state directory: session, sync position and the device's MLS state.
    #[arg(long, global = true, default_value = "./poststelle-client", env = "POSTSTELLE_CLIENT_STATE")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum SuiteChoice {
    /// The mandatory suite: X25519, AES-128-GCM, Ed25519.
    Default,
    /// The post-quantum hybrid: X25519 with ML-KEM-768.
    Pq,
}

#[derive(Subcommand)]
enum Command {
    /// Log in with a password and publish this device's MLS keys.
    Login {
        #[arg(long)]
        homeserver: String,
        #[arg(long)]
        user: String,
        #[arg(long, env = "POSTSTELLE_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Create an MLS room; prints its id.
    CreateRoom {
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "default")]
        suite: SuiteChoice,
    },
    /// Add every device of a user to the room's group and invite the user.
    Invite { room: String, user: String },
    /// Join a room whose Welcome has arrived.
    Join { room: String },
    /// Send a text message.
    Send { room: String, text: String },
    /// Send a file as an encrypted attachment.
    SendFile { room: String, path: PathBuf },
    /// Sync and print one JSON line per received message.
    Listen {
        /// Sync once and stop.
        #[arg(long)]
        once: bool,
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Download and decrypt attachments into this directory.
        #[arg(long)]
        download_dir: Option<PathBuf>,
    },
    /// List the devices in a room's MLS group.
    Members { room: String },
    /// List the rooms whose MLS group this device holds.
    Rooms,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let state = cli.state.as_path();
    match cli.command {
        Command::Login { homeserver, user, password } => {
            let client = Client::login(state, &homeserver, &user, &password).await?;
            println!("{}", json!({"user_id": client.user_id(), "device_id": client.device_id()}));
        }
        Command::CreateRoom { name, suite } => {
            let suite = match suite {
                SuiteChoice::Default => Suite::DEFAULT,
                SuiteChoice::Pq => Suite::PQ_HYBRID,
            };
            println!("{}", Client::open(state)?.create_room(name.as_deref(), suite).await?);
        }
        Command::Invite { room, user } => {
            let devices = Client::open(state)?.invite(&room, &user).await?;
            println!("{}", json!({"room_id": room, "user_id": user, "devices": devices}));
        }
        Command::Join { room } => Client::open(state)?.join(&room).await?,
        Command::Send { room, text } => println!("{}", Client::open(state)?.send_text(&room, &text).await?),
        Command::SendFile { room, path } => println!("{}", Client::open(state)?.send_file(&room, &path).await?),
        Command::Listen { once, timeout_ms, download_dir } => {
            listen(&mut Client::open(state)?, once, timeout_ms, download_dir.as_deref()).await?
        }
        Command::Members { room } => {
            for member in Client::open(state)?.members(&room)? {
                println!("{}", json!({"user_id": member.user_id, "device_id": member.device_id}));
            }
        }
        Command::Rooms => Client::open(state)?.rooms().iter().for_each(|room| println!("{room}")),
    }
    Ok(())
}

async fn listen(
    client: &mut Client,
    once: bool,
    timeout_ms: u64,
    download_dir: Option<&Path>,
) -> Result<(), ClientError> {
    loop {
        let report = client.sync_once(timeout_ms).await?;
        for room in &report.welcomed {
            eprintln!("{}", json!({"welcomed": room}));
        }
        for room in &report.invites {
            eprintln!("{}", json!({"invited": room}));
        }
        for room in &report.removed_from {
            eprintln!("{}", json!({"removed_from": room}));
        }
        for problem in &report.problems {
            eprintln!("warning: {problem}");
        }
        for message in &report.received {
            let mut line = json!({
                "room_id": message.room_id,
                "event_id": message.event_id,
                "sender": message.sender,
                "device": message.device,
                "type": message.event_type,
                "msgtype": message.content["msgtype"],
                "body": message.content["body"],
            });
            if let (Some(dir), true) = (download_dir, message.content.get("file").is_some()) {
                match save_attachment(client, message, dir).await {
                    Ok(path) => line["file"] = json!(path),
                    Err(e) => eprintln!("warning: {} {}: attachment not saved: {e}", message.room_id, message.event_id),
                }
            }
            println!("{line}");
        }
        if once {
            return Ok(());
        }
    }
}

/// Downloads, decrypts and writes an attachment as `<event id>-<file name>`, both reduced to
/// characters safe in a file name.
async fn save_attachment(client: &Client, message: &Received, dir: &Path) -> Result<PathBuf, ClientError> {
    let bytes = client.download_attachment(&message.content).await?;
    let name = message.content["filename"].as_str().or(message.content["body"].as_str()).unwrap_or("file");
    let safe = |text: &str| -> String {
        text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
    };
    std::fs::create_dir_all(dir)?;
    let path =
        dir.join(format!("{}-{}", safe(message.event_id.trim_start_matches('$')), safe(name).trim_start_matches('.')));
    std::fs::write(&path, bytes)?;
    Ok(path)
}
