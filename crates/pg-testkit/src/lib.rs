//! A throwaway PostgreSQL server for tests.
//!
//! [`PgServer::start`] runs `initdb` (trust authentication, no password) into a new temporary
//! directory and `pg_ctl start` on a free loopback port, with the server's unix socket in
//! that directory too, so nothing outside it is touched. Dropping the server stops it
//! (`pg_ctl stop -m immediate`) and removes the directory.
//!
//! The binaries come from `$REGMIG_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/<major>/bin` that has `initdb`, else `PATH`. PostgreSQL refuses to
//! run as root, so when the tests run as root both commands run as the `postgres` user
//! (`runuser -u postgres --`) and the directory is handed to that user.
//!
//! One server per test binary is the cheap pattern: start it once (a `OnceLock`) and give
//! each test its own database ([`PgServer::create_database`]). A static is never dropped,
//! and a killed test is not either, so every server also has a reaper: a `sh` loop that
//! polls the test process once a second and, once it is gone, stops the server and removes
//! its directory (without it each test binary left a running server and about 360 MB in
//! the temporary directory behind).

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long `pg_ctl start` and `pg_ctl restart` may take before the start is an error.
pub const START_TIMEOUT_SECS: u64 = 60;

/// A running throwaway server. Stopped and deleted on drop.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

/// Why a server could not be started or used: the command and what it printed.
#[derive(Debug)]
pub struct PgTestkitError(pub String);

impl std::fmt::Display for PgTestkitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgTestkitError {}

impl From<io::Error> for PgTestkitError {
    fn from(error: io::Error) -> Self {
        PgTestkitError(error.to_string())
    }
}

type Result<T> = std::result::Result<T, PgTestkitError>;

/// The directory holding `initdb`, `pg_ctl` and `postgres`: see the crate docs.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("REGMIG_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    if let Some((_, bin)) = majors.pop() {
        return Ok(bin);
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()?;
    let path = String::from_utf8_lossy(&on_path.stdout).trim().to_string();
    match Path::new(&path).parent() {
        Some(parent) if on_path.status.success() && !path.is_empty() => Ok(parent.to_path_buf()),
        _ => Err(PgTestkitError(
            "no PostgreSQL server binaries: set REGMIG_PG_BIN, or install the `postgresql` \
             package (initdb was not in /usr/lib/postgresql/*/bin nor on PATH)"
                .to_string(),
        )),
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl PgServer {
    /// Starts a new server: initdb into a temporary directory, then `pg_ctl start` on a free
    /// loopback port. Errors carry the failing command's output.
    pub fn start() -> Result<PgServer> {
        let bin = find_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("regmig-pg-").tempdir()?;
        let run_as_postgres = is_root();
        if run_as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        let server = PgServer {
            dir,
            bin,
            port: free_port()?,
            run_as_postgres,
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        server.pg_ctl("start")?;
        server.spawn_reaper()?;
        Ok(server)
    }

    /// Starts the reaper (see the crate docs): it outlives this process, and does nothing
    /// more than stop and remove what is still there when this process is gone.
    fn spawn_reaper(&self) -> Result<()> {
        const REAPER: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -d "$3" ]; then $5 "$2" stop -D "$3" -m immediate -w; fi
rm -rf "$4""#;
        let pg_ctl = self.bin.join("pg_ctl");
        let pg_ctl = if pg_ctl.exists() {
            pg_ctl
        } else {
            PathBuf::from("pg_ctl")
        };
        let as_postgres = if self.run_as_postgres {
            "runuser -u postgres --"
        } else {
            ""
        };
        let data = self.data_dir();
        Command::new("sh")
            .args(["-c", REAPER, "pg-testkit-reaper"])
            .arg(std::process::id().to_string())
            .arg(&pg_ctl)
            .arg(&data)
            .arg(self.dir.path())
            .arg(as_postgres)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|error| PgTestkitError(format!("could not start the reaper (sh): {error}")))?;
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the superuser `postgres` (no password: trust).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database (for one test) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs SQL through `psql` (on the server's socket) and returns what it printed
    /// (unaligned, tuples only). For test set-up, e.g. creating a role.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let output = self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection is cut, the data
    /// stays. Returns when it accepts connections again.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl("restart")
    }

    /// Stops the server (`pg_ctl stop -m fast`) without deleting its data; [`Self::start_again`]
    /// starts it on the same port.
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl("stop")
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl("start")
    }

    fn pg_ctl(&self, action: &str) -> Result<()> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port,
            path_str(self.dir.path())?
        );
        let timeout = START_TIMEOUT_SECS.to_string();
        let mut args = vec![action, "-D", path_str(&data)?, "-w", "-t", &timeout];
        if action != "stop" {
            args.extend(["-l", path_str(&log)?, "-o", &options]);
        }
        if action != "start" {
            args.extend(["-m", "fast"]);
        }
        self.run("pg_ctl", &args).map_err(|error| {
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            PgTestkitError(format!("{error}\nserver log:\n{server_log}"))
        })?;
        if action != "stop" {
            self.wait_ready()?;
        }
        Ok(())
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(START_TIMEOUT_SECS);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PgTestkitError(format!(
                    "the server on port {} did not accept connections within {START_TIMEOUT_SECS} s",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let program_path = self.bin.join(program);
        let program_path = if program_path.exists() {
            program_path
        } else {
            PathBuf::from(program)
        };
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program_path);
            command
        } else {
            Command::new(&program_path)
        };
        command.args(args).current_dir(self.dir.path());
        let output = command.output().map_err(|error| {
            PgTestkitError(format!("could not run {}: {error}", program_path.display()))
        })?;
        if !output.status.success() {
            return Err(PgTestkitError(format!(
                "{} {} failed ({}): {}{}",
                program_path.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(output)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.data_dir()) {
            let _ = self.run("pg_ctl", &["stop", "-D", data, "-m", "immediate", "-w"]);
        }
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| PgTestkitError(format!("{} is not UTF-8", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child of `a_server_never_dropped_is_stopped_and_removed_once_its_process_is_gone`.
    const LEAK_CHILD_ENV: &str = "PG_TESTKIT_LEAK_CHILD";

    /// In the child: starts a server, prints its directory and port, and exits without
    /// dropping it, as a test binary with a shared server in a static does.
    #[test]
    fn leak_child() {
        if std::env::var_os(LEAK_CHILD_ENV).is_none() {
            return;
        }
        let server = PgServer::start().expect("start a throwaway server");
        println!("leaked {} {}", server.port(), server.dir.path().display());
        std::mem::forget(server);
        std::process::exit(0);
    }

    #[test]
    fn a_server_never_dropped_is_stopped_and_removed_once_its_process_is_gone() {
        let output = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "tests::leak_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(LEAK_CHILD_ENV, "1")
            .stderr(std::process::Stdio::null())
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|line| line.split_once("leaked ").map(|(_, server)| server))
            .unwrap_or_else(|| panic!("the child printed no server: {stdout}"));
        let (port, dir) = line.split_once(' ').expect("port and directory");
        let port: u16 = port.parse().expect("a port");
        let dir = PathBuf::from(dir);
        // The reaper polls once a second; stopping takes a moment more on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(60);
        while dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!dir.exists(), "{} is still there", dir.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on {port} once the child is gone"
        );
    }

    #[test]
    fn a_server_starts_answers_restarts_and_is_gone_after_drop() {
        let server = PgServer::start().expect("start a throwaway server");
        let url = server
            .create_database("kit_test")
            .expect("create a database");
        assert_eq!(
            url,
            format!("postgres://postgres@127.0.0.1:{}/kit_test", server.port())
        );
        assert_eq!(
            server.psql("kit_test", "SELECT 40 + 2").unwrap().trim(),
            "42"
        );
        server.restart().expect("restart");
        assert_eq!(server.psql("kit_test", "SELECT 1").unwrap().trim(), "1");
        let port = server.port();
        let dir = server.dir.path().to_path_buf();
        drop(server);
        assert!(!dir.exists(), "the directory is removed");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on {port} after the drop"
        );
    }
}
