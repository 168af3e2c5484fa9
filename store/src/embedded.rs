//! Zero-config PostgreSQL: a private cluster under trailbook's data directory, run with the system's
//! PostgreSQL binaries, for machines that have PostgreSQL installed but no server running (used when
//! `DATABASE_URL` is not set).
//!
//! [`EmbeddedPostgres::start`] finds `initdb` and `pg_ctl` (in `PATH`, else the highest version under
//! `/usr/lib/postgresql/*/bin`), initialises the cluster on first use, starts it on a free port of
//! 127.0.0.1 (TCP only: no Unix socket, so no socket-directory permission problems) and waits until it
//! accepts connections. A cluster that is already running, e.g. because `trailbook serve` owns it, is
//! reused and left running by [`EmbeddedPostgres::stop`].
//!
//! # Layout
//! Inside the data directory:
//! - `pg/`: the cluster (`initdb`'s data directory);
//! - `pg.log`: the server log;
//! - `pg-password`: the `postgres` superuser's random password (mode 0600);
//! - `pg-port`: the port the cluster was last started on;
//! - `pg.lock`: an exclusive lock held while a process initialises, starts or stops the cluster.
//!
//! # Running as root
//! PostgreSQL refuses to run as root, so a root process runs `initdb` and `pg_ctl` as the `postgres`
//! system user (`runuser`, else `su`) and hands it the cluster directory. When that user cannot reach the
//! data directory (it lives under a 0700 directory such as `/root`), the cluster and its log move to
//! `/var/lib/trailbook/clusters/<hash of the data directory>` (`.log` beside it); password, port and
//! lock stay in the data directory, which only root reads.
//!
//! # Concurrency
//! Several processes (parallel test binaries, `serve` next to a CLI command) may start the same cluster
//! at once. Holding `pg.lock` from "is it initialised / running?" to "it accepts connections" makes the
//! check-then-act atomic: exactly one caller initialises and starts, the others find it running and
//! reuse it. The lock is an `flock` on its own open file description, so it also serialises tasks of
//! the same process.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::process::Command;
use tokio::time::Instant;

/// Where distribution packages (Debian, Ubuntu) install the server binaries, one directory per version.
const LIB_ROOT: &str = "/usr/lib/postgresql";
/// Where a root process keeps clusters the `postgres` user could not reach inside the data directory.
const FALLBACK_ROOT: &str = "/var/lib/trailbook/clusters";
/// The cluster's superuser role, and the system user a root process runs the binaries as.
const POSTGRES_USER: &str = "postgres";
/// How long to keep retrying a TCP connect after `pg_ctl start -w` (or when reusing a cluster).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// `pg_ctl start` attempts; a retry only happens when the chosen port was taken in the meantime.
const START_ATTEMPTS: usize = 3;
/// How many lines of stderr or of the server log an error message quotes.
const TAIL_LINES: usize = 6;

/// Why the private cluster could not be started or stopped. Every message is one line that names the
/// path involved and what to do; none contains the password.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// Neither `PATH` nor `/usr/lib/postgresql/*/bin` has `initdb` and `pg_ctl`: install PostgreSQL's
    /// server package or set `DATABASE_URL`. The CLI exits with code 2.
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and pg_ctl in PATH and /usr/lib/postgresql/*/bin); \
         install them, e.g. `apt-get install postgresql`, or set DATABASE_URL"
    )]
    NoBinaries,

    /// Running as root, which PostgreSQL refuses, and there is no `postgres` system user to run it as:
    /// create that user or set `DATABASE_URL`.
    #[error(
        "running as root and no unprivileged `postgres` user exists to run the cluster; \
         create one or set DATABASE_URL"
    )]
    NoUnprivilegedUser,

    /// A file system or process-spawning step failed; `action` names it with its path. Usually a
    /// permission problem on the data directory.
    #[error("could not {action}: {source}; check the path's permissions or set DATABASE_URL")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },

    /// A PostgreSQL tool (`initdb`, `pg_ctl`) or a helper (`id`, `chown`) failed; `stderr` quotes its
    /// last lines, which say what to fix.
    #[error("`{command}` failed ({status}): {stderr}; fix the cause or set DATABASE_URL")]
    Command {
        command: String,
        status: String,
        /// The last lines of the command's stderr (stdout when stderr is empty), joined by ` | `.
        stderr: String,
    },

    /// `pg_ctl start` failed; `log_tail` quotes the server log, which says why (bad configuration, no
    /// shared memory, a damaged cluster...).
    #[error(
        "PostgreSQL did not start ({status}); last lines of {}: {log_tail}; fix the cause or set DATABASE_URL",
        .log.display()
    )]
    Start {
        log: PathBuf,
        status: String,
        /// The last lines of the server log, joined by ` | `.
        log_tail: String,
    },

    /// The server was started (or found running) but did not accept TCP connections in time: see the log.
    #[error(
        "PostgreSQL on 127.0.0.1:{port} did not accept connections within {} s; see {}",
        READY_TIMEOUT.as_secs(),
        .log.display()
    )]
    NotReady { port: u16, log: PathBuf },

    /// The cluster exists but the password that `initdb` was given is gone: restore the file, or remove
    /// the cluster directory to start over with an empty database.
    #[error(
        "the PostgreSQL cluster at {} exists but its password file {} is missing or unreadable; \
         restore that file, or remove {} to start over with an empty cluster, or set DATABASE_URL",
        .cluster.display(),
        .password_file.display(),
        .cluster.display()
    )]
    MissingPassword {
        cluster: PathBuf,
        password_file: PathBuf,
    },
}

type Result<T, E = EmbeddedError> = std::result::Result<T, E>;

/// A private PostgreSQL cluster, started by this process or found running.
pub struct EmbeddedPostgres {
    /// The cluster's data directory (`<data_dir>/pg`, or the fallback when running as root).
    pgdir: PathBuf,
    /// The caller's data directory, which holds the lock, password and port files.
    data_dir: PathBuf,
    port: u16,
    /// The `postgres` superuser's password. Never logged: see the `Debug` impl.
    password: String,
    /// Whether this process started the server (and so [`EmbeddedPostgres::stop`] stops it).
    started_here: bool,
    binaries: Binaries,
    /// Whether the binaries run directly or as the `postgres` system user.
    runner: Runner,
}

impl fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("pgdir", &self.pgdir)
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("password", &"***")
            .field("started_here", &self.started_here)
            .field("binaries", &self.binaries)
            .field("runner", &self.runner)
            .finish()
    }
}

impl EmbeddedPostgres {
    /// Start (or reuse) the private cluster under `data_dir`. Waits until it accepts connections.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        let binaries = find_binaries(std::env::var_os("PATH").as_deref(), Path::new(LIB_ROOT))?;
        create_dir_all(data_dir).await?;
        let data_dir = tokio::fs::canonicalize(data_dir)
            .await
            .map_err(io_error(format!("resolve {}", data_dir.display())))?;

        // Held until we return: see "Concurrency" in the module docs.
        let _lock = lock(&data_dir).await?;

        let runner = Runner::detect().await?;
        let pgdir = runner.cluster_dir(&data_dir).await?;
        let password_file = data_dir.join("pg-password");
        let password = if pgdir.join("PG_VERSION").exists() {
            runner.hand_over_tree(&pgdir).await?;
            read_password(&pgdir, &password_file).await?
        } else {
            init_cluster(&binaries, &runner, &pgdir, &password_file).await?
        };

        let mut pg = EmbeddedPostgres {
            pgdir,
            data_dir,
            port: 0,
            password,
            started_here: false,
            binaries,
            runner,
        };
        match pg.running_port().await? {
            Some(port) => {
                pg.port = port;
                tracing::info!(
                    cluster = %pg.pgdir.display(),
                    "reusing PostgreSQL already running on 127.0.0.1:{port}"
                );
                wait_until_accepting(port, &pg.log_file()).await?;
            }
            None => {
                pg.port = pg.start_server().await?;
                pg.started_here = true;
                if let Err(e) = wait_until_accepting(pg.port, &pg.log_file()).await {
                    // Do not leave a server behind that nobody will stop.
                    let _ = pg.pg_ctl_stop().await;
                    return Err(e);
                }
                tracing::info!(
                    cluster = %pg.pgdir.display(),
                    "started PostgreSQL on 127.0.0.1:{}",
                    pg.port
                );
            }
        }
        Ok(pg)
    }

    /// Connection URL for `database` on this cluster (contains the password: never log it).
    /// `database` is inserted as is, so it should be a plain identifier.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{POSTGRES_USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// The TCP port the cluster listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this process started the server; if not, another process owns it and [`Self::stop`]
    /// leaves it running.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// The cluster's data directory: `<data_dir>/pg`, or the fallback under `/var/lib/trailbook/clusters`
    /// when running as root with a data directory the `postgres` user cannot reach. For diagnostics.
    pub fn cluster_dir(&self) -> &Path {
        &self.pgdir
    }

    /// Stop the cluster if this process started it (pg_ctl stop -m fast); a no-op otherwise.
    pub async fn stop(self) -> Result<()> {
        if !self.started_here {
            return Ok(());
        }
        // Not in the middle of another process's start, which would then find a dying server.
        let _lock = lock(&self.data_dir).await?;
        if self.running_port().await?.is_none() {
            tracing::info!(cluster = %self.pgdir.display(), "PostgreSQL was already stopped");
            return Ok(());
        }
        self.pg_ctl_stop().await?;
        tracing::info!(cluster = %self.pgdir.display(), "stopped PostgreSQL on 127.0.0.1:{}", self.port);
        Ok(())
    }

    /// The server log: `<data_dir>/pg.log`, or `<hash>.log` beside a fallback cluster.
    fn log_file(&self) -> PathBuf {
        self.pgdir.with_extension("log")
    }

    /// The port of the server running on the cluster, or `None` when none runs. Clears a stale
    /// `postmaster.pid` whose process id now belongs to another program (e.g. after a container
    /// restart), which would otherwise make `pg_ctl start` fail.
    async fn running_port(&self) -> Result<Option<u16>> {
        let pid_file = self.pgdir.join("postmaster.pid");
        let contents = match tokio::fs::read_to_string(&pid_file).await {
            Ok(contents) => contents,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(format!("read {}", pid_file.display()))(e)),
        };

        let mut args = vec![OsString::from("status"), OsString::from("-D")];
        args.push(self.pgdir.clone().into_os_string());
        let output = self.runner.run(&self.binaries.pg_ctl, &args).await?;
        match output.status.code() {
            Some(0) => {}
            // 3: no server running (the pid file is stale and `pg_ctl start` copes with it).
            Some(3) => return Ok(None),
            _ => return Err(command_error(&self.binaries.pg_ctl, &args, &output)),
        }

        // postmaster.pid: line 1 is the pid, line 4 the port.
        let mut lines = contents.lines();
        let pid = lines.next().and_then(|l| l.trim().parse::<u32>().ok());
        let comm = match pid {
            Some(pid) => tokio::fs::read_to_string(format!("/proc/{pid}/comm"))
                .await
                .ok(),
            None => None,
        };
        if let (Some(pid), Some(comm)) = (pid, comm) {
            if !matches!(comm.trim(), "postgres" | "postmaster") {
                tracing::warn!(
                    pid_file = %pid_file.display(),
                    "removing stale postmaster.pid: process {pid} is `{}`, not PostgreSQL",
                    comm.trim()
                );
                tokio::fs::remove_file(&pid_file)
                    .await
                    .map_err(io_error(format!("remove {}", pid_file.display())))?;
                return Ok(None);
            }
        }
        let port = match lines.nth(2).and_then(|l| l.trim().parse::<u16>().ok()) {
            Some(port) => port,
            None => match read_port_file(&self.data_dir).await {
                Some(port) => port,
                None => {
                    return Err(io_error(format!(
                        "find the port of the PostgreSQL server running on {}",
                        self.pgdir.display()
                    ))(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "neither postmaster.pid nor pg-port names it",
                    )))
                }
            },
        };
        Ok(Some(port))
    }

    /// Starts the server on the remembered port if it is free, else on a fresh one, and returns the port.
    async fn start_server(&self) -> Result<u16> {
        let port_file = self.data_dir.join("pg-port");
        let mut port = match read_port_file(&self.data_dir).await {
            Some(port) if port_is_free(port) => port,
            _ => free_port()?,
        };
        let log = self.log_file();
        self.runner.prepare_log(&log).await?;

        let mut attempt = 1;
        loop {
            tokio::fs::write(&port_file, port.to_string())
                .await
                .map_err(io_error(format!("write {}", port_file.display())))?;
            let args = vec![
                OsString::from("start"),
                OsString::from("-w"),
                OsString::from("-D"),
                self.pgdir.clone().into_os_string(),
                OsString::from("-l"),
                log.clone().into_os_string(),
                OsString::from("-o"),
                // pg_ctl hands this to a shell, which turns '' into an empty value.
                OsString::from(format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
                )),
            ];
            let log_start = tokio::fs::metadata(&log).await.map_or(0, |m| m.len());
            let output = self.runner.run(&self.binaries.pg_ctl, &args).await?;
            if output.status.success() {
                return Ok(port);
            }
            // What this attempt logged, else what pg_ctl said.
            let mut log_tail = tail_of_file(&log, log_start).await;
            if log_tail.is_empty() {
                log_tail = output_tail(&output);
            }
            let port_taken =
                log_tail.contains("could not bind") || log_tail.contains("Address already in use");
            if !port_taken || attempt == START_ATTEMPTS {
                return Err(EmbeddedError::Start {
                    log,
                    status: output.status.to_string(),
                    log_tail,
                });
            }
            tracing::info!("port {port} was taken meanwhile; trying another");
            port = free_port()?;
            attempt += 1;
        }
    }

    async fn pg_ctl_stop(&self) -> Result<()> {
        let args = vec![
            OsString::from("stop"),
            OsString::from("-w"),
            OsString::from("-D"),
            self.pgdir.clone().into_os_string(),
            OsString::from("-m"),
            OsString::from("fast"),
        ];
        self.runner
            .run_ok(&self.binaries.pg_ctl, &args)
            .await
            .map(drop)
    }
}

/// Paths of the two server binaries trailbook drives (`pg_ctl` finds `postgres` beside itself).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

/// Finds `initdb` and `pg_ctl`: the first `PATH` entry holding both, else the highest version directory
/// `<lib_root>/<version>/bin` holding both. Parameters instead of the environment keep it testable.
fn find_binaries(path_var: Option<&OsStr>, lib_root: &Path) -> Result<Binaries> {
    let in_path = path_var
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| !dir.as_os_str().is_empty());
    in_path
        .chain(versioned_bin_dirs(lib_root))
        .find_map(|dir| {
            let binaries = Binaries {
                initdb: dir.join("initdb"),
                pg_ctl: dir.join("pg_ctl"),
            };
            (is_executable(&binaries.initdb) && is_executable(&binaries.pg_ctl)).then_some(binaries)
        })
        .ok_or(EmbeddedError::NoBinaries)
}

/// `<lib_root>/<version>/bin` for every directory named like a version (`16`, `9.6`), highest first.
fn versioned_bin_dirs(lib_root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lib_root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How the PostgreSQL binaries are run.
#[derive(Debug, Clone)]
enum Runner {
    /// We are not root: run them directly.
    Direct,
    /// We are root, which PostgreSQL refuses: run them as the `postgres` system user.
    AsPostgres {
        uid: u32,
        gid: u32,
        switch: UserSwitch,
    },
}

/// The tool that runs a command as `postgres`.
#[derive(Debug, Clone)]
enum UserSwitch {
    /// `runuser -u postgres -- <cmd>` (util-linux).
    Runuser(PathBuf),
    /// `su postgres -s /bin/sh -c '<cmd>'`, where `runuser` is missing.
    Su(PathBuf),
}

impl Runner {
    async fn detect() -> Result<Self> {
        if effective_uid().await? != 0 {
            return Ok(Runner::Direct);
        }
        let (Some(uid), Some(gid)) = (id_of_postgres("-u").await?, id_of_postgres("-g").await?)
        else {
            return Err(EmbeddedError::NoUnprivilegedUser);
        };
        let switch = match find_system_tool("runuser") {
            Some(runuser) => UserSwitch::Runuser(runuser),
            None => UserSwitch::Su(find_system_tool("su").unwrap_or_else(|| "su".into())),
        };
        Ok(Runner::AsPostgres { uid, gid, switch })
    }

    /// Where the cluster lives: `<data_dir>/pg`, unless we run as `postgres` and that user cannot reach
    /// `data_dir`; then a directory under [`FALLBACK_ROOT`] named after a hash of `data_dir`.
    async fn cluster_dir(&self, data_dir: &Path) -> Result<PathBuf> {
        let local = data_dir.join("pg");
        if matches!(self, Runner::Direct) {
            return Ok(local);
        }
        let args = [OsString::from("-x"), data_dir.as_os_str().to_owned()];
        if self.run(Path::new("test"), &args).await?.status.success() {
            return Ok(local);
        }

        let root = Path::new(FALLBACK_ROOT);
        create_dir_all(root).await?;
        // The `postgres` user must traverse these whatever the umask was.
        for dir in [root.parent().unwrap_or(root), root] {
            tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .await
                .map_err(io_error(format!("make {} traversable", dir.display())))?;
        }
        let fallback = root.join(path_hash(data_dir));
        tracing::info!(
            data_dir = %data_dir.display(),
            "the `postgres` user cannot reach the data directory; keeping the PostgreSQL cluster at {} instead",
            fallback.display()
        );
        Ok(fallback)
    }

    /// Gives `pgdir` and everything in it to the `postgres` user, unless it already owns it.
    async fn hand_over_tree(&self, pgdir: &Path) -> Result<()> {
        let Runner::AsPostgres { uid, gid, .. } = self else {
            return Ok(());
        };
        let meta = tokio::fs::metadata(pgdir)
            .await
            .map_err(io_error(format!("inspect {}", pgdir.display())))?;
        if meta.uid() == *uid && meta.gid() == *gid {
            return Ok(());
        }
        let args = [
            OsString::from("-R"),
            OsString::from(format!("{POSTGRES_USER}:{POSTGRES_USER}")),
            pgdir.as_os_str().to_owned(),
        ];
        let output = Command::new("chown")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io_error("run chown".to_owned()))?;
        if !output.status.success() {
            return Err(command_error(Path::new("chown"), &args, &output));
        }
        Ok(())
    }

    /// Gives one file to the `postgres` user (no-op when running directly).
    fn hand_over(&self, path: &Path) -> Result<()> {
        if let Runner::AsPostgres { uid, gid, .. } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid)).map_err(io_error(format!(
                "give {} to the postgres user",
                path.display()
            )))?;
        }
        Ok(())
    }

    /// Creates the server log if needed and makes it writable by whoever runs the server.
    async fn prepare_log(&self, log: &Path) -> Result<()> {
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .await
            .map_err(io_error(format!("create {}", log.display())))?;
        self.hand_over(log)
    }

    fn command(&self, program: &Path, args: &[OsString]) -> Command {
        let mut command = match self {
            Runner::Direct => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            Runner::AsPostgres {
                switch: UserSwitch::Runuser(runuser),
                ..
            } => {
                let mut command = Command::new(runuser);
                command
                    .args(["-u", POSTGRES_USER, "--"])
                    .arg(program)
                    .args(args);
                command
            }
            Runner::AsPostgres {
                switch: UserSwitch::Su(su),
                ..
            } => {
                let script = std::iter::once(program.as_os_str())
                    .chain(args.iter().map(OsString::as_os_str))
                    .map(shell_quote)
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut command = Command::new(su);
                command.args([POSTGRES_USER, "-s", "/bin/sh", "-c", &script]);
                command
            }
        };
        // `/` so that the `postgres` user never starts in a directory it cannot read (e.g. /root).
        command.current_dir("/").stdin(Stdio::null());
        command
    }

    /// Runs `program` (as `postgres` when needed) and returns its output, whatever its exit status.
    async fn run(&self, program: &Path, args: &[OsString]) -> Result<Output> {
        self.command(program, args)
            .output()
            .await
            .map_err(io_error(format!("run {}", program.display())))
    }

    /// Like [`Runner::run`], but a non-zero exit status is an error.
    async fn run_ok(&self, program: &Path, args: &[OsString]) -> Result<Output> {
        let output = self.run(program, args).await?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(command_error(program, args, &output))
        }
    }
}

/// Runs `initdb` on `pgdir` with a fresh random password, stored in `password_file`, and returns it.
async fn init_cluster(
    binaries: &Binaries,
    runner: &Runner,
    pgdir: &Path,
    password_file: &Path,
) -> Result<String> {
    if pgdir.exists() {
        // No PG_VERSION: what an interrupted first start left. initdb wants an empty directory.
        tracing::warn!(cluster = %pgdir.display(), "removing an incomplete PostgreSQL cluster");
        tokio::fs::remove_dir_all(pgdir)
            .await
            .map_err(io_error(format!("remove {}", pgdir.display())))?;
    }
    create_dir_all(pgdir).await?;
    tokio::fs::set_permissions(pgdir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(io_error(format!("restrict {}", pgdir.display())))?;
    runner.hand_over(pgdir)?;

    let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
    write_private(password_file, &password).await?;
    // initdb reads the password from a file, which must be readable by whoever runs it.
    let pwfile = pgdir.with_extension("pwfile");
    write_private(&pwfile, &password).await?;
    runner.hand_over(&pwfile)?;

    tracing::info!("initialising PostgreSQL cluster at {}", pgdir.display());
    let mut pwfile_arg = OsString::from("--pwfile=");
    pwfile_arg.push(&pwfile);
    let args = vec![
        OsString::from("-D"),
        pgdir.as_os_str().to_owned(),
        OsString::from("-U"),
        OsString::from(POSTGRES_USER),
        OsString::from("--auth=scram-sha-256"),
        pwfile_arg,
        OsString::from("--encoding=UTF8"),
        OsString::from("--locale=C"),
    ];
    let result = runner.run_ok(&binaries.initdb, &args).await;
    let removed = tokio::fs::remove_file(&pwfile)
        .await
        .map_err(io_error(format!("remove {}", pwfile.display())));
    if let Err(e) = result {
        // Leave nothing half-made: the next start initialises afresh.
        let _ = tokio::fs::remove_dir_all(pgdir).await;
        return Err(e);
    }
    removed?;
    Ok(password)
}

async fn read_password(pgdir: &Path, password_file: &Path) -> Result<String> {
    match tokio::fs::read_to_string(password_file).await {
        Ok(password) if !password.trim().is_empty() => Ok(password.trim().to_owned()),
        _ => Err(EmbeddedError::MissingPassword {
            cluster: pgdir.to_owned(),
            password_file: password_file.to_owned(),
        }),
    }
}

/// Writes `contents` to `path`, readable by its owner only.
async fn write_private(path: &Path, contents: &str) -> Result<()> {
    let action = || format!("write {}", path.display());
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(|e| io_error(action())(e))?;
    // `mode` only applies to a new file.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .await
        .map_err(|e| io_error(action())(e))?;
    tokio::io::AsyncWriteExt::write_all(&mut file, contents.as_bytes())
        .await
        .map_err(|e| io_error(action())(e))
}

/// Takes the exclusive lock on `<data_dir>/pg.lock`; it is released when the returned file is dropped.
async fn lock(data_dir: &Path) -> Result<std::fs::File> {
    let path = data_dir.join("pg.lock");
    let action = format!("lock {}", path.display());
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok::<_, io::Error>(file)
    })
    .await;
    match locked {
        Ok(result) => result.map_err(io_error(action)),
        Err(join_error) => Err(io_error(action)(io::Error::other(join_error))),
    }
}

async fn read_port_file(data_dir: &Path) -> Option<u16> {
    tokio::fs::read_to_string(data_dir.join("pg-port"))
        .await
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A port of 127.0.0.1 that was free a moment ago (the OS picks it; we release it at once).
fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("pick a free port on 127.0.0.1".to_owned()))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Retries a TCP connect to the server for up to [`READY_TIMEOUT`].
async fn wait_until_accepting(port: u16, log: &Path) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)),
        );
        if let Ok(Ok(_)) = attempt.await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(EmbeddedError::NotReady {
                port,
                log: log.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The effective user id, from `/proc/self/status` (`Uid: real effective saved fs`), else `id -u`.
async fn effective_uid() -> Result<u32> {
    if let Ok(status) = tokio::fs::read_to_string("/proc/self/status").await {
        let euid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok());
        if let Some(euid) = euid {
            return Ok(euid);
        }
    }
    let args = [OsString::from("-u")];
    let output = Command::new("id")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_error("run `id -u` to find the current user".to_owned()))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| command_error(Path::new("id"), &args, &output))
}

/// `id <flag> postgres`: the `postgres` user's uid (`-u`) or gid (`-g`), `None` when there is no such user.
async fn id_of_postgres(flag: &str) -> Result<Option<u32>> {
    let output = Command::new("id")
        .args([flag, POSTGRES_USER])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_error("run `id` to look up the postgres user".to_owned()))?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse().ok())
}

/// A system tool in `PATH` or the sbin directories, which root's `PATH` sometimes lacks.
fn find_system_tool(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// A stable 64-bit FNV-1a hash of the path as 16 hex digits (std's hasher may change between releases,
/// which would orphan fallback clusters).
fn path_hash(path: &Path) -> String {
    let hash = path
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// Quotes an argument for `/bin/sh`.
fn shell_quote(arg: &OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

async fn create_dir_all(dir: &Path) -> Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io_error(format!("create directory {}", dir.display())))
}

/// The last [`TAIL_LINES`] lines written to a (possibly long) log file since byte `since`, joined by ` | `.
async fn tail_of_file(path: &Path, since: u64) -> String {
    const WINDOW: u64 = 16 * 1024;
    let read = async {
        let mut file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        file.seek(SeekFrom::Start(since.max(len.saturating_sub(WINDOW))))
            .await?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await?;
        Ok::<_, io::Error>(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read.await {
        Ok(text) => last_lines(&text),
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

/// The last lines of a command's stderr, or of its stdout when stderr is empty.
fn output_tail(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.trim().is_empty() {
        last_lines(&String::from_utf8_lossy(&output.stdout))
    } else {
        last_lines(&stderr)
    }
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ")
}

fn command_error(program: &Path, args: &[OsString], output: &Output) -> EmbeddedError {
    let command = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    EmbeddedError::Command {
        command,
        status: output.status.to_string(),
        stderr: output_tail(output),
    }
}

fn io_error(action: String) -> impl FnOnce(io::Error) -> EmbeddedError {
    move |source| EmbeddedError::Io { action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let name = format!(
                "trailbook-embedded-{}",
                Alphanumeric.sample_string(&mut rand::rng(), 12)
            );
            let dir = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&dir).expect("the temp dir is writable");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn fake_binaries(dir: &Path) {
        std::fs::create_dir_all(dir).expect("the temp dir is writable");
        for name in ["initdb", "pg_ctl"] {
            let path = dir.join(name);
            std::fs::write(&path, "#!/bin/sh\n").expect("the temp dir is writable");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("we own the file");
        }
    }

    /// With nothing in PATH and an empty lib root, the lookup fails with `NoBinaries`, whose message
    /// tells the user to install PostgreSQL or set DATABASE_URL.
    #[test]
    fn no_binaries_anywhere_is_reported_with_a_remedy() {
        let empty = TempDir::new();

        let result = find_binaries(Some(empty.0.as_os_str()), &empty.0);

        let error = result.expect_err("nothing to find");
        assert!(matches!(error, EmbeddedError::NoBinaries));
        let message = error.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
    }

    /// A missing PATH and a missing lib root are not errors of their own: still `NoBinaries`.
    #[test]
    fn missing_path_and_lib_root_mean_no_binaries() {
        let empty = TempDir::new();

        let result = find_binaries(None, &empty.0.join("does-not-exist"));

        assert!(matches!(result, Err(EmbeddedError::NoBinaries)));
    }

    /// Without binaries in PATH, the highest numeric version under the lib root wins (16 over 9.6 and
    /// 15), and non-version directories and versions missing a binary are skipped.
    #[test]
    fn highest_complete_version_under_the_lib_root_is_chosen() {
        let root = TempDir::new();
        fake_binaries(&root.0.join("9.6/bin"));
        fake_binaries(&root.0.join("15/bin"));
        fake_binaries(&root.0.join("16/bin"));
        fake_binaries(&root.0.join("latest/bin"));
        std::fs::create_dir_all(root.0.join("17/bin")).expect("the temp dir is writable");

        let found = find_binaries(Some(OsStr::new("")), &root.0).expect("16 is complete");

        assert_eq!(found.pg_ctl, root.0.join("16/bin/pg_ctl"));
        assert_eq!(found.initdb, root.0.join("16/bin/initdb"));
    }

    /// A PATH directory holding both binaries wins over the lib root; one holding only one does not count.
    #[test]
    fn path_is_searched_before_the_lib_root() {
        let root = TempDir::new();
        fake_binaries(&root.0.join("lib/16/bin"));
        fake_binaries(&root.0.join("usr-bin"));
        std::fs::create_dir_all(root.0.join("half")).expect("the temp dir is writable");
        std::fs::write(root.0.join("half/pg_ctl"), "").expect("the temp dir is writable");
        let path_var =
            std::env::join_paths([root.0.join("half"), root.0.join("usr-bin")]).expect("no colons");

        let found =
            find_binaries(Some(&path_var), &root.0.join("lib")).expect("usr-bin is complete");

        assert_eq!(found.pg_ctl, root.0.join("usr-bin/pg_ctl"));
    }

    /// The fallback directory name is stable: 16 hex digits of FNV-1a, the same on every run.
    #[test]
    fn path_hash_is_sixteen_stable_hex_digits() {
        let hash = path_hash(Path::new("/root/.local/share/trailbook"));

        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash, path_hash(Path::new("/root/.local/share/trailbook")));
        assert_ne!(hash, path_hash(Path::new("/root/.local/share/trailbook2")));
        assert_eq!(path_hash(Path::new("")), "cbf29ce484222325");
    }

    /// Error messages quote only the last lines, on one line.
    #[test]
    fn last_lines_keeps_the_tail_on_one_line() {
        let text = (1..=10).map(|i| format!("line {i}\n")).collect::<String>();

        assert_eq!(
            last_lines(&text),
            "line 5 | line 6 | line 7 | line 8 | line 9 | line 10"
        );
    }

    /// The su fallback survives quotes in arguments.
    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
    }
}
