//! The command line: `serve`, `migrate`, `config check`, `user create`, `keys rotate`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "poststelle", version, about = "Poststelle Matrix homeserver")]
pub struct Cli {
    /// TOML configuration file (every key can also be set as POSTSTELLE_<KEY>).
    #[arg(long, short, global = true, env = "POSTSTELLE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the homeserver.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Account administration.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The server's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key current; the old one stays published as expired. Servers pick the
    /// new key up when they (re)start.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration, print the effective values, and exit.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Create {
        /// The localpart (the part between `@` and `:`).
        name: String,
        /// The password; without it a random one is generated and printed.
        #[arg(long)]
        password: Option<String>,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
}
