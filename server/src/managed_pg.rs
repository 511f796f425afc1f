//! The managed PostgreSQL cluster: with no `database.url`, Poststelle runs a private cluster
//! under `data_dir` from the PostgreSQL binaries installed on the machine (DESIGN §3).
//!
//! The cluster listens only on a Unix socket in a private directory (no TCP), is created on first
//! start, reused afterwards, and stopped with the process. The `postgres` child gets a
//! parent-death signal, so it never outlives us, not even after a `kill -9`. A process that finds
//! a cluster already running in the same `data_dir` (a `poststelle serve`) attaches to it instead.
//! As root, `initdb` and `postgres` run as the unprivileged `postgres` user, which they demand.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader},
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    fcntl::{Flock, FlockArg},
    sys::signal::{Signal, kill},
    unistd::{Pid, User, geteuid},
};
use sqlx::postgres::PgConnectOptions;

/// The Debian/Ubuntu package that provides the binaries, named in the error when none are found.
const INSTALL_HINT: &str = "install the PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`; \
     Fedora: `dnf install postgresql-server`), put `initdb` and `postgres` on PATH, \
     or set database.url to an existing PostgreSQL ≥ 13";

/// The longest socket directory for which `<dir>/.s.PGSQL.5432` fits into `sockaddr_un`.
const MAX_SOCKET_DIR_LEN: usize = 90;

const PORT: u16 = 5432;

#[derive(Debug, thiserror::Error)]
pub enum ManagedPgError {
    #[error("no PostgreSQL binaries found: {INSTALL_HINT}")]
    NoBinaries,
    #[error("{0}")]
    Setup(String),
    #[error("io error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("PostgreSQL did not start: {0}")]
    Start(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ManagedPgError + '_ {
    move |source| ManagedPgError::Io { path: path.to_owned(), source }
}

/// Tuning for throwaway clusters (tests): no fsync, no durability, faster start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Durability {
    pub throwaway: bool,
}

/// Where `initdb` and `postgres` are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub initdb: PathBuf,
    pub postgres: PathBuf,
}

impl Binaries {
    /// `initdb`/`postgres` on `PATH`, else the newest `/usr/lib/postgresql/*/bin`.
    pub fn find() -> Result<Self, ManagedPgError> {
        let on_path = |name: &str| {
            std::env::var_os("PATH")
                .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
        };
        if let (Some(initdb), Some(postgres)) = (on_path("initdb"), on_path("postgres")) {
            return Ok(Self { initdb, postgres });
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((v, bin))
            })
            .collect();
        versions.sort();
        let (_, bin) = versions.pop().ok_or(ManagedPgError::NoBinaries)?;
        Ok(Self { initdb: bin.join("initdb"), postgres: bin.join("postgres") })
    }
}

/// A running cluster: either our own child process, or one another process in the same
/// `data_dir` started and owns.
#[derive(Debug)]
pub struct ManagedPostgres {
    pgdata: PathBuf,
    socket_dir: PathBuf,
    child: Option<Child>,
}

impl ManagedPostgres {
    /// Starts (creating on first use) the cluster under `root`, or attaches to the one running
    /// there. `root` is `<data_dir>/postgres` for the server.
    pub fn start(root: &Path, durability: Durability) -> Result<Self, ManagedPgError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let root = root.canonicalize().map_err(io_err(root))?;
        let owner = PgOwner::for_current_process()?;
        owner.check_reachable(&root)?;

        // One process at a time initialises or starts the cluster.
        let lock_path = root.join("start.lock");
        let lock_file = File::create(&lock_path).map_err(io_err(&lock_path))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| io_err(&lock_path)(e.into()))?;

        let pgdata = root.join("cluster");
        if let Some(socket_dir) = running_cluster_socket(&pgdata) {
            tracing::info!(pgdata = %pgdata.display(), "attached to the running managed PostgreSQL");
            return Ok(Self { pgdata, socket_dir, child: None });
        }

        let binaries = Binaries::find()?;
        if !pgdata.join("PG_VERSION").exists() {
            init_cluster(&binaries, &pgdata, &owner, durability)?;
        }
        let socket_dir = socket_dir_for(&root);
        fs::create_dir_all(&socket_dir).map_err(io_err(&socket_dir))?;
        fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&socket_dir))?;
        owner.chown(&socket_dir)?;

        let log_path = root.join("postgres.log");
        let child = spawn_postgres(&binaries, &pgdata, &socket_dir, &log_path, &owner, durability)?;
        let mut this = Self { pgdata, socket_dir, child: Some(child) };
        if let Err(e) = this.wait_ready(&log_path) {
            this.stop();
            return Err(e);
        }
        tracing::info!(pgdata = %this.pgdata.display(), socket = %this.socket_dir.display(), "managed PostgreSQL started");
        Ok(this)
    }

    /// Connection options for database `db` over the cluster's socket.
    pub fn connect_options(&self, db: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username("postgres")
            .database(db)
            .application_name("poststelle")
    }

    /// The directory holding the cluster's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// A `postgres://` URL for database `db` over the socket (for child processes).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@localhost:{PORT}/{db}?host={}", self.socket_dir.display())
    }

    /// Whether this process started the cluster (and so stops it).
    pub fn is_owned(&self) -> bool {
        self.child.is_some()
    }

    /// The process id of the postmaster we started, if we started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn wait_ready(&mut self, log_path: &Path) -> Result<(), ManagedPgError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let socket = self.socket_dir.join(format!(".s.PGSQL.{PORT}"));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(ManagedPgError::Start(format!(
                    "postgres exited with {status}; last log lines:\n{}",
                    log_tail(log_path)
                )));
            }
            // The postmaster writes "ready" into the pid file once it accepts connections.
            if socket.exists() && pid_file_status(&self.pgdata).as_deref() == Some("ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ManagedPgError::Start(format!(
                    "not ready after 60 s; last log lines:\n{}",
                    log_tail(log_path)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the cluster if we started it: fast shutdown (SIGINT), then SIGQUIT, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = Pid::from_raw(child.id() as i32);
        for (signal, wait) in [
            (Signal::SIGINT, Duration::from_secs(30)),
            (Signal::SIGQUIT, Duration::from_secs(5)),
            (Signal::SIGKILL, Duration::from_secs(5)),
        ] {
            let _ = kill(pid, signal);
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    tracing::info!("managed PostgreSQL stopped");
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        tracing::error!(pid = child.id(), "managed PostgreSQL did not stop");
    }
}

impl Drop for ManagedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Who owns and runs the cluster: ourselves, or `postgres` when we are root.
struct PgOwner {
    user: Option<User>,
}

impl PgOwner {
    fn for_current_process() -> Result<Self, ManagedPgError> {
        if !geteuid().is_root() {
            return Ok(Self { user: None });
        }
        let user = User::from_name("postgres").ok().flatten().ok_or_else(|| {
            ManagedPgError::Setup(
                "running as root, but there is no `postgres` user to run PostgreSQL as \
                     (PostgreSQL refuses to run as root); create one or run poststelle as an \
                     unprivileged user"
                    .to_owned(),
            )
        })?;
        Ok(Self { user: Some(user) })
    }

    fn chown(&self, path: &Path) -> Result<(), ManagedPgError> {
        if let Some(user) = &self.user {
            nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| io_err(path)(e.into()))?;
        }
        Ok(())
    }

    /// As root, every ancestor of `dir` must be traversable by the `postgres` user.
    fn check_reachable(&self, dir: &Path) -> Result<(), ManagedPgError> {
        let Some(user) = &self.user else { return Ok(()) };
        for ancestor in dir.ancestors().skip(1) {
            let meta = fs::metadata(ancestor).map_err(io_err(ancestor))?;
            let mode = meta.mode();
            let ok = mode & 0o001 != 0
                || (meta.uid() == user.uid.as_raw() && mode & 0o100 != 0)
                || (meta.gid() == user.gid.as_raw() && mode & 0o010 != 0);
            if !ok {
                return Err(ManagedPgError::Setup(format!(
                    "the managed PostgreSQL runs as user `postgres`, which cannot enter {} \
                     (mode {:o}); choose a data_dir outside it or set database.url",
                    ancestor.display(),
                    mode & 0o7777
                )));
            }
        }
        Ok(())
    }

    fn apply(&self, command: &mut Command) {
        if let Some(user) = &self.user {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            command.env("HOME", &user.dir);
        }
    }
}

fn init_cluster(
    binaries: &Binaries,
    pgdata: &Path,
    owner: &PgOwner,
    durability: Durability,
) -> Result<(), ManagedPgError> {
    // initdb wants an empty (or absent) directory; a half-initialised one from a crash is removed.
    if pgdata.exists() {
        fs::remove_dir_all(pgdata).map_err(io_err(pgdata))?;
    }
    fs::create_dir_all(pgdata).map_err(io_err(pgdata))?;
    fs::set_permissions(pgdata, fs::Permissions::from_mode(0o700)).map_err(io_err(pgdata))?;
    owner.chown(pgdata)?;
    let mut command = Command::new(&binaries.initdb);
    command
        .arg("-D")
        .arg(pgdata)
        .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"])
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if durability.throwaway {
        command.arg("--no-sync");
    }
    owner.apply(&mut command);
    tracing::info!(pgdata = %pgdata.display(), "creating the managed PostgreSQL cluster (initdb)");
    let output =
        command.output().map_err(|e| ManagedPgError::Setup(format!("running {}: {e}", binaries.initdb.display())))?;
    if !output.status.success() {
        return Err(ManagedPgError::Setup(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

fn spawn_postgres(
    binaries: &Binaries,
    pgdata: &Path,
    socket_dir: &Path,
    log_path: &Path,
    owner: &PgOwner,
    durability: Durability,
) -> Result<Child, ManagedPgError> {
    let log = File::options().create(true).append(true).open(log_path).map_err(io_err(log_path))?;
    owner.chown(log_path)?;
    let mut command = Command::new(&binaries.postgres);
    command
        .arg("-D")
        .arg(pgdata)
        .arg("-k")
        .arg(socket_dir)
        .args(["-p", &PORT.to_string()])
        .args(["-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"])
        .args(["-c", "max_connections=200"])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err(log_path))?)
        .stderr(log);
    if durability.throwaway {
        command.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
    }
    owner.apply(&mut command);
    spawn_with_parent_death_signal(command)
        .map_err(|e| ManagedPgError::Start(format!("running {}: {e}", binaries.postgres.display())))
}

/// Spawns `command` so that it receives SIGINT (PostgreSQL's fast shutdown) when we die.
///
/// Linux delivers the parent-death signal when the *thread* that forked exits, so the fork
/// happens on a thread that lives as long as the process.
fn spawn_with_parent_death_signal(mut command: Command) -> std::io::Result<Child> {
    #[allow(unsafe_code)]
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("postgres-parent".to_owned()).spawn(move || {
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    })?;
    rx.recv().map_err(|e| std::io::Error::other(e.to_string()))?
}

/// The socket directory: inside the cluster root when the path is short enough for a Unix
/// socket, else a private directory under the system temp dir named after the root.
fn socket_dir_for(root: &Path) -> PathBuf {
    let inside = root.join("run");
    if inside.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
        return inside;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    std::env::temp_dir().join(format!("poststelle-pg-{}", hex::encode(&digest[..8])))
}

/// If a postmaster is alive for `pgdata` and ready, its socket directory.
fn running_cluster_socket(pgdata: &Path) -> Option<PathBuf> {
    let lines = pid_file_lines(pgdata)?;
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    kill(Pid::from_raw(pid), None).ok()?;
    let socket_dir = PathBuf::from(lines.get(4)?.trim());
    (lines.get(7).map(|s| s.trim()) == Some("ready") && socket_dir.join(format!(".s.PGSQL.{PORT}")).exists())
        .then_some(socket_dir)
}

fn pid_file_lines(pgdata: &Path) -> Option<Vec<String>> {
    let file = File::open(pgdata.join("postmaster.pid")).ok()?;
    BufReader::new(file).lines().collect::<Result<_, _>>().ok()
}

fn pid_file_status(pgdata: &Path) -> Option<String> {
    pid_file_lines(pgdata)?.get(7).map(|s| s.trim().to_owned())
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
