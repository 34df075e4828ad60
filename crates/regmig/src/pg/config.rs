//! [`PgConfig`]: where a PostgreSQL server is, how to authenticate and encrypt, and which
//! PostgreSQL schema holds regmig's tables. Never shows its password: [`PgConfig::redacted`],
//! `Display` and `Debug` all leave it out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio_postgres::config::Host;

use crate::log::LogError;

/// The PostgreSQL schema regmig's tables live in unless the URL says `schema=`.
pub const DEFAULT_SCHEMA: &str = "regmig";
/// The environment variable a password is read from when neither the URL nor a password
/// file gives one (libpq's name for it).
pub const PASSWORD_ENV: &str = "PGPASSWORD";
/// The connections one pool opens at most, unless the URL says `pool_size=`.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How long a connection attempt may take, unless the URL says `connect_timeout=` (seconds).
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// The largest password file read (only its first line is the password).
pub const PASSWORD_FILE_SIZE_MAX_BYTES: u64 = 64 << 10;
/// How long one statement of a regmig session may run before the server cancels it
/// (`statement_timeout`), unless the URL says `statement_timeout_ms=`: a store call blocked
/// by another session's lock fails with an error naming the operation instead of hanging.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// How long a regmig session may sit idle inside a transaction before the server ends the
/// session (`idle_in_transaction_session_timeout`), unless the URL says
/// `idle_in_transaction_session_timeout_ms=`: a client that stalls mid-transaction (a
/// paused process, a lost network) does not keep its row locks, e.g. on the head row every
/// append takes, for ever.
pub const DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT_MS: u64 = 60_000;

/// Whether and how the connection is encrypted: libpq's `sslmode` values that regmig takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS (`sslmode=disable`). The default for a loopback host or a unix socket only.
    Disable,
    /// TLS, but the server's certificate is not checked (`sslmode=require`, as in libpq):
    /// protects against a passive eavesdropper, not against an impostor.
    Require,
    /// TLS, the certificate chain checked against the roots and the host name against the
    /// certificate (`sslmode=verify-full`). The default for every other host.
    VerifyFull,
}

impl TlsMode {
    /// The `sslmode` value.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// How to reach the PostgreSQL server that holds a history.
///
/// Built from a URL, `postgres://user[:password]@host[:port]/database[?param=value&...]`
/// (`postgresql://` too). The query parameters are the driver's (libpq's names:
/// `connect_timeout`, `application_name`, `options`, `host` for a unix socket directory...)
/// plus regmig's own, which are taken out before the URL reaches the driver:
/// - `sslmode`: `disable`, `require` or `verify-full` ([`TlsMode`]). Default: `verify-full`,
///   except for a loopback host (`localhost`, `127.0.0.0/8`, `::1`) or a unix socket, where
///   the traffic never leaves the machine and the default is `disable`. `prefer`, `allow`
///   and `verify-ca` are refused: the first two fall back to plain text silently, the last
///   checks no host name.
/// - `sslrootcert`: a PEM file of the certificate authorities to trust (a private CA);
///   without it, the Mozilla roots (`webpki-roots`).
/// - `schema`: the PostgreSQL schema of regmig's tables (default [`DEFAULT_SCHEMA`]); a
///   lower-case identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes.
/// - `pool_size`: the most connections a store opens (default [`DEFAULT_POOL_SIZE`]).
/// - `statement_timeout_ms`: the server cancels a statement of a regmig session that runs
///   longer (default [`DEFAULT_STATEMENT_TIMEOUT_MS`]; 0: no limit).
/// - `idle_in_transaction_session_timeout_ms`: the server ends a regmig session idle inside
///   a transaction for longer (default [`DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT_MS`];
///   0: no limit).
///
/// The connection attempt is bounded by the driver's `connect_timeout` (seconds, default
/// [`DEFAULT_CONNECT_TIMEOUT_SECS`]). The two session timeouts are sent as `-c` settings in
/// the session's `options`, after any `options=` of the URL, so they win over it.
///
/// The password comes from the URL, else from a password file ([`PgConfig::password_file`]:
/// its first line), else from the `PGPASSWORD` environment variable. A URL with a password
/// and a password file both is refused: which one wins would be a guess.
#[derive(Clone)]
pub struct PgConfig {
    driver: tokio_postgres::Config,
    schema: String,
    tls: TlsMode,
    root_cert: Option<PathBuf>,
    pool_size: usize,
    /// Where the password came from, for messages (never the password).
    password_source: PasswordSource,
    /// The URL's own `options=` (libpq's), kept apart: the driver's options are rebuilt
    /// from it and regmig's session settings whenever one of those changes.
    url_options: Option<String>,
    statement_timeout_ms: u64,
    idle_in_transaction_session_timeout_ms: u64,
    read_only_sessions: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PasswordSource {
    None,
    Url,
    File(PathBuf),
    Env,
}

impl PgConfig {
    /// Parses a `postgres://` URL (see the type's documentation). A password missing from
    /// the URL is taken from `PGPASSWORD` when set. Errors
    /// ([`LogError::StoreConfig`]) show the URL without its password.
    pub fn from_url(url: &str) -> Result<PgConfig, LogError> {
        let redacted = redact_url(url);
        let invalid = |reason: String| LogError::StoreConfig {
            store: redacted.clone(),
            reason,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "not a PostgreSQL URL: it must start with postgres:// or postgresql://".to_string(),
            ));
        }
        // The driver splits the user part at the first '@', so a raw '@' in a password
        // would make the rest of the password a host name (and show it in messages).
        let authority = url
            .split_once("://")
            .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
        if authority.matches('@').count() > 1 {
            return Err(invalid(
                "the URL's user part holds more than one '@': write an '@' in a user name or password as %40"
                    .to_string(),
            ));
        }
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let mut sslmode = None;
        let mut root_cert = None;
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut statement_timeout_ms = DEFAULT_STATEMENT_TIMEOUT_MS;
        let mut idle_in_transaction_session_timeout_ms =
            DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT_MS;
        let mut passed_on = Vec::new();
        for pair in query.into_iter().flat_map(|query| query.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decode(value)
                .ok_or_else(|| invalid(format!("parameter `{key}`: bad percent-encoding")))?;
            match key {
                "sslmode" => {
                    sslmode = Some(match decoded.as_str() {
                        "disable" => TlsMode::Disable,
                        "require" => TlsMode::Require,
                        "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(invalid(format!(
                                "sslmode={other} is not supported: use disable, require or verify-full \
                                 (prefer and allow may fall back to plain text; verify-ca checks no host name)"
                            )))
                        }
                    })
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(decoded)),
                "schema" => schema = decoded,
                "pool_size" => {
                    pool_size = decoded
                        .parse::<usize>()
                        .ok()
                        .filter(|size| *size > 0)
                        .ok_or_else(|| {
                            invalid(format!(
                                "pool_size={decoded} is not a positive whole number"
                            ))
                        })?
                }
                "statement_timeout_ms" | "idle_in_transaction_session_timeout_ms" => {
                    let ms = decoded.parse::<u64>().ok().filter(|ms| *ms <= TIMEOUT_MS_MAX).ok_or_else(|| {
                        invalid(format!(
                            "{key}={decoded} is not a whole number of milliseconds in 0..={TIMEOUT_MS_MAX}"
                        ))
                    })?;
                    if key == "statement_timeout_ms" {
                        statement_timeout_ms = ms;
                    } else {
                        idle_in_transaction_session_timeout_ms = ms;
                    }
                }
                "password" => {
                    return Err(invalid(
                        "a password in the query string is refused: put it in the URL's user part, a password file or PGPASSWORD"
                            .to_string(),
                    ))
                }
                _ => passed_on.push(pair),
            }
        }
        check_schema_name(&schema).map_err(&invalid)?;
        let driver_url = if passed_on.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", passed_on.join("&"))
        };
        let mut driver = tokio_postgres::Config::from_str(&driver_url).map_err(|error| {
            // The driver's messages name options, not values; scrub the password anyway.
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            invalid(scrub(&message, url))
        })?;
        if driver.get_hosts().is_empty() {
            return Err(invalid("the URL names no host".to_string()));
        }
        if driver.get_user().is_none() {
            return Err(invalid(
                "the URL names no user (postgres://USER@host/database)".to_string(),
            ));
        }
        if driver.get_dbname().is_none() {
            return Err(invalid(
                "the URL names no database (postgres://user@host/DATABASE)".to_string(),
            ));
        }
        if driver.get_connect_timeout().is_none() {
            driver.connect_timeout(std::time::Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS));
        }
        let tls = sslmode.unwrap_or_else(|| {
            if driver.get_hosts().iter().all(is_local_host) {
                TlsMode::Disable
            } else {
                TlsMode::VerifyFull
            }
        });
        if root_cert.is_some() && tls == TlsMode::Disable {
            return Err(invalid(
                "sslrootcert is given but sslmode is disable: say sslmode=verify-full".to_string(),
            ));
        }
        let mut password_source = PasswordSource::None;
        if driver.get_password().is_some() {
            password_source = PasswordSource::Url;
        } else if let Some(password) = std::env::var_os(PASSWORD_ENV) {
            driver.password(password.as_encoded_bytes());
            password_source = PasswordSource::Env;
        }
        let url_options = driver.get_options().map(str::to_string);
        let mut config = PgConfig {
            driver,
            schema,
            tls,
            root_cert,
            pool_size,
            password_source,
            url_options,
            statement_timeout_ms,
            idle_in_transaction_session_timeout_ms,
            read_only_sessions: false,
        };
        config.rebuild_options();
        Ok(config)
    }

    /// Sets the driver's `options` from the URL's own and regmig's session settings.
    fn rebuild_options(&mut self) {
        let mut options: Vec<String> = self
            .url_options
            .iter()
            .filter(|options| !options.is_empty())
            .cloned()
            .collect();
        options.push(format!(
            "-c statement_timeout={}",
            self.statement_timeout_ms
        ));
        options.push(format!(
            "-c idle_in_transaction_session_timeout={}",
            self.idle_in_transaction_session_timeout_ms
        ));
        if self.read_only_sessions {
            options.push("-c default_transaction_read_only=on".to_string());
        }
        self.driver.options(options.join(" "));
    }

    /// The same server, with the server cancelling any statement of a session that runs
    /// longer than `ms` milliseconds (0: no limit). Refused above [`TIMEOUT_MS_MAX`].
    pub fn with_statement_timeout_ms(mut self, ms: u64) -> Result<PgConfig, LogError> {
        check_timeout_ms("statement_timeout_ms", ms).map_err(|reason| LogError::StoreConfig {
            store: self.redacted(),
            reason,
        })?;
        self.statement_timeout_ms = ms;
        self.rebuild_options();
        Ok(self)
    }

    /// The same server, with the server ending a session that stays idle inside a
    /// transaction longer than `ms` milliseconds (0: no limit). Refused above
    /// [`TIMEOUT_MS_MAX`].
    pub fn with_idle_in_transaction_session_timeout_ms(
        mut self,
        ms: u64,
    ) -> Result<PgConfig, LogError> {
        check_timeout_ms("idle_in_transaction_session_timeout_ms", ms).map_err(|reason| {
            LogError::StoreConfig {
                store: self.redacted(),
                reason,
            }
        })?;
        self.idle_in_transaction_session_timeout_ms = ms;
        self.rebuild_options();
        Ok(self)
    }

    /// The same server, with a connection attempt given up after `ms` milliseconds (the
    /// driver's `connect_timeout`, which the URL gives in whole seconds). 0 is refused: an
    /// attempt must end.
    pub fn with_connect_timeout_ms(mut self, ms: u64) -> Result<PgConfig, LogError> {
        if ms == 0 || ms > TIMEOUT_MS_MAX {
            return Err(LogError::StoreConfig {
                store: self.redacted(),
                reason: format!("connect timeout {ms} ms is outside 1..={TIMEOUT_MS_MAX}"),
            });
        }
        self.driver
            .connect_timeout(std::time::Duration::from_millis(ms));
        Ok(self)
    }

    /// The server cancels a statement that runs longer (ms; 0: no limit).
    pub fn statement_timeout_ms(&self) -> u64 {
        self.statement_timeout_ms
    }

    /// The server ends a session idle inside a transaction for longer (ms; 0: no limit).
    pub fn idle_in_transaction_session_timeout_ms(&self) -> u64 {
        self.idle_in_transaction_session_timeout_ms
    }

    /// A connection attempt is given up after this long (ms).
    pub fn connect_timeout_ms(&self) -> u64 {
        self.driver
            .get_connect_timeout()
            .map_or(DEFAULT_CONNECT_TIMEOUT_SECS * 1000, |timeout| {
                timeout.as_millis() as u64
            })
    }

    /// Takes the password from the first line of `path` (a trailing `\r\n` or `\n` is not
    /// part of it), instead of `PGPASSWORD`. Refused when the URL carries a password too,
    /// when the file cannot be read, or when its first line is empty.
    pub fn password_file(mut self, path: &Path) -> Result<PgConfig, LogError> {
        let invalid = |reason: String| LogError::StoreConfig {
            store: self.redacted(),
            reason,
        };
        if self.password_source == PasswordSource::Url {
            return Err(invalid(format!(
                "both the URL and the password file {} give a password: keep one",
                path.display()
            )));
        }
        let contents = match crate::files::read_at_most(path, PASSWORD_FILE_SIZE_MAX_BYTES)
            .map_err(|error| {
                invalid(format!(
                    "could not read the password file {}: {error}",
                    path.display()
                ))
            })? {
            crate::files::Bounded::Whole(contents) => contents,
            crate::files::Bounded::TooLarge { .. } => {
                return Err(invalid(format!(
                    "the password file {} holds more than {PASSWORD_FILE_SIZE_MAX_BYTES} bytes",
                    path.display()
                )))
            }
        };
        let first_line = contents.split(|byte| *byte == b'\n').next().unwrap_or(&[]);
        let password = first_line.strip_suffix(b"\r").unwrap_or(first_line);
        if password.is_empty() {
            return Err(invalid(format!(
                "the password file {} has an empty first line",
                path.display()
            )));
        }
        self.driver.password(password);
        self.password_source = PasswordSource::File(path.to_path_buf());
        Ok(self)
    }

    /// The same server with regmig's tables in another PostgreSQL schema.
    pub fn with_schema(mut self, schema: &str) -> Result<PgConfig, LogError> {
        check_schema_name(schema).map_err(|reason| LogError::StoreConfig {
            store: self.redacted(),
            reason,
        })?;
        self.schema = schema.to_string();
        Ok(self)
    }

    /// The same server, with every session read-only (`default_transaction_read_only`):
    /// for a reader, so that not even a bug of its own can write.
    pub fn read_only_sessions(mut self) -> PgConfig {
        self.read_only_sessions = true;
        self.rebuild_options();
        self
    }

    /// The PostgreSQL schema of regmig's tables (an identifier that needs no quoting).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Whether and how the connection is encrypted.
    pub fn tls(&self) -> TlsMode {
        self.tls
    }

    /// The PEM file of trusted certificate authorities, when not the Mozilla roots.
    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// The most connections one store opens.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Whether a password is set (from the URL, a password file or `PGPASSWORD`).
    pub fn has_password(&self) -> bool {
        self.driver.get_password().is_some()
    }

    /// The driver's configuration (with the password, when there is one).
    pub fn driver_config(&self) -> &tokio_postgres::Config {
        &self.driver
    }

    /// The URL without its password, for messages and logs:
    /// `postgres://user@host:port/database?sslmode=...&schema=...`.
    pub fn redacted(&self) -> String {
        // Re-encoded as the URL spelled it, so a user name holding ':' or '@' reads as one.
        let user = self
            .driver
            .get_user()
            .unwrap_or("")
            .replace('%', "%25")
            .replace(':', "%3A")
            .replace('@', "%40");
        let ports = self.driver.get_ports();
        let hosts: Vec<String> = self
            .driver
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(index, host)| {
                let port = ports
                    .get(index)
                    .or(ports.first())
                    .map_or(String::new(), |port| format!(":{port}"));
                match host {
                    Host::Tcp(name) if name.contains(':') => format!("[{name}]{port}"),
                    Host::Tcp(name) => format!("{name}{port}"),
                    Host::Unix(path) => format!("[unix socket {}]{port}", path.display()),
                }
            })
            .collect();
        let mut url = format!(
            "postgres://{user}@{}/{}?sslmode={}",
            hosts.join(","),
            self.driver.get_dbname().unwrap_or(""),
            self.tls.as_str()
        );
        if self.schema != DEFAULT_SCHEMA {
            url.push_str(&format!("&schema={}", self.schema));
        }
        url
    }

    /// Where the password came from, for a message: `the URL`, `the password file <path>`,
    /// `PGPASSWORD`, or `no password`.
    pub fn password_source(&self) -> String {
        match &self.password_source {
            PasswordSource::None => "no password".to_string(),
            PasswordSource::Url => "the URL".to_string(),
            PasswordSource::File(path) => format!("the password file {}", path.display()),
            PasswordSource::Env => PASSWORD_ENV.to_string(),
        }
    }
}

impl fmt::Display for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &self.redacted())
            .field("password", &self.password_source())
            .field("root_cert", &self.root_cert)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field(
                "idle_in_transaction_session_timeout_ms",
                &self.idle_in_transaction_session_timeout_ms,
            )
            .finish()
    }
}

/// `url` with any password taken out of its user part (`user:secret@` becomes `user@`) and
/// the query string's `password=` values replaced by `***`: for messages about a URL that
/// may not even parse.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (authority_end, has_path) = match rest.find(['/', '?']) {
        Some(index) => (index, true),
        None => (rest.len(), false),
    };
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{user}@{hosts}")
        }
        // No user part: a "port" that is not a number may be a password written without
        // its '@' (postgres://user:secret), so only numeric ports are shown.
        None => authority
            .split(',')
            .map(|host| match host.rsplit_once(':') {
                Some((name, port))
                    if !port.bytes().all(|byte| byte.is_ascii_digit()) && !name.ends_with(']') =>
                {
                    format!("{name}:***")
                }
                _ => host.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
    };
    let tail = if has_path {
        match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                            format!("{key}=***")
                        }
                        _ => pair.to_string(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_string(),
        }
    } else {
        tail.to_string()
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// `message` with the password of `url` (raw and percent-decoded) replaced by `***`.
fn scrub(message: &str, url: &str) -> String {
    let mut scrubbed = message.to_string();
    let Some(rest) = url.split_once("://").map(|(_, rest)| rest) else {
        return scrubbed;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            if !password.is_empty() {
                scrubbed = scrubbed.replace(password, "***");
                if let Some(decoded) = percent_decode(password) {
                    if !decoded.is_empty() {
                        scrubbed = scrubbed.replace(&decoded, "***");
                    }
                }
            }
        }
    }
    scrubbed
}

/// The longest session timeout taken (ms): PostgreSQL's settings are 32-bit milliseconds.
pub const TIMEOUT_MS_MAX: u64 = i32::MAX as u64;

fn check_timeout_ms(name: &str, ms: u64) -> Result<(), String> {
    if ms > TIMEOUT_MS_MAX {
        return Err(format!("{name} {ms} is above {TIMEOUT_MS_MAX} ms"));
    }
    Ok(())
}

/// A schema name regmig puts into SQL unquoted: `[a-z_][a-z0-9_]*`, at most 63 bytes
/// (PostgreSQL's identifier limit), not starting with `pg_` (reserved for the system).
fn check_schema_name(schema: &str) -> Result<(), String> {
    let mut chars = schema.chars();
    let well_formed = matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && schema.len() <= 63;
    if !well_formed {
        return Err(format!(
            "schema `{schema}` is not a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"
        ));
    }
    if schema.starts_with("pg_") {
        return Err(format!(
            "schema `{schema}`: names starting with pg_ are reserved by PostgreSQL"
        ));
    }
    Ok(())
}

fn is_local_host(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|address| address.is_loopback())
        }
    }
}

/// Decodes `%XX` escapes (and nothing else); `None` for a bad escape or bytes that are not
/// UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = value.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redacted_url_never_shows_the_password() {
        let config = PgConfig::from_url(
            "postgres://alice:s3cr%40t@db.example.com:6543/hist?application_name=x",
        )
        .expect("a valid URL");
        assert!(config.has_password());
        assert_eq!(
            config.redacted(),
            "postgres://alice@db.example.com:6543/hist?sslmode=verify-full"
        );
        assert_eq!(config.to_string(), config.redacted());
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        assert!(debug.contains("the URL"), "{debug}");
    }

    #[test]
    fn loopback_hosts_default_to_plain_text_and_others_to_verify_full() {
        for (url, mode) in [
            ("postgres://u@127.0.0.1:5432/d", TlsMode::Disable),
            ("postgres://u@localhost/d", TlsMode::Disable),
            ("postgres://u@[::1]:5432/d", TlsMode::Disable),
            ("postgres://u@db.internal/d", TlsMode::VerifyFull),
            ("postgres://u@10.0.0.7/d", TlsMode::VerifyFull),
            ("postgres://u@10.0.0.7/d?sslmode=require", TlsMode::Require),
            (
                "postgres://u@127.0.0.1/d?sslmode=verify-full",
                TlsMode::VerifyFull,
            ),
        ] {
            assert_eq!(PgConfig::from_url(url).expect(url).tls(), mode, "{url}");
        }
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason_and_without_the_password() {
        for (url, reason_part) in [
            ("mysql://u:pw1@h/d", "not a PostgreSQL URL"),
            (
                "postgres://u:pw1@h/d?sslmode=prefer",
                "sslmode=prefer is not supported",
            ),
            ("postgres://u:pw1@h/d?schema=Bad-Name", "schema `Bad-Name`"),
            ("postgres://u:pw1@h/d?schema=pg_x", "reserved"),
            ("postgres://u:pw1@h/d?pool_size=0", "pool_size=0"),
            ("postgres://u:pw1@h/d?nonsense=1", "unknown option"),
            ("postgres://u:pw1@h", "names no database"),
            (
                "postgres://u@h/d?password=pw1",
                "password in the query string",
            ),
            (
                "postgres://u:pw1@h/d?sslmode=disable&sslrootcert=/x",
                "sslrootcert",
            ),
        ] {
            match PgConfig::from_url(url) {
                Err(error @ LogError::StoreConfig { .. }) => {
                    let message = error.to_string();
                    assert!(message.contains(reason_part), "{url}: {message}");
                    assert!(!message.contains("pw1"), "{url}: {message}");
                }
                other => panic!("{url}: expected StoreConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_schema_and_pool_size_come_from_the_url() {
        let config =
            PgConfig::from_url("postgres://u@h/d?schema=hist_2&pool_size=3").expect("valid");
        assert_eq!((config.schema(), config.pool_size()), ("hist_2", 3));
        assert!(config.redacted().ends_with("&schema=hist_2"));
    }

    #[test]
    fn a_password_file_gives_the_password_and_clashes_with_one_in_the_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\r\nignored\n").expect("write");
        let config = PgConfig::from_url("postgres://u@h/d")
            .expect("valid")
            .password_file(&path)
            .expect("a readable password file");
        assert_eq!(
            config.driver_config().get_password(),
            Some(&b"from-file"[..])
        );
        assert_eq!(
            config.password_source(),
            format!("the password file {}", path.display())
        );
        match PgConfig::from_url("postgres://u:other@h/d")
            .expect("valid")
            .password_file(&path)
        {
            Err(LogError::StoreConfig { reason, store }) => {
                assert!(
                    reason.contains("both the URL and the password file"),
                    "{reason}"
                );
                assert!(!store.contains("other"), "{store}");
            }
            other => panic!("expected StoreConfig, got {other:?}"),
        }
        std::fs::write(&path, "\nsecond").expect("write");
        match PgConfig::from_url("postgres://u@h/d")
            .expect("valid")
            .password_file(&path)
        {
            Err(LogError::StoreConfig { reason, .. }) => {
                assert!(reason.contains("empty first line"), "{reason}")
            }
            other => panic!("expected StoreConfig, got {other:?}"),
        }
    }

    #[test]
    fn session_timeouts_default_are_overridable_and_go_after_the_urls_options() {
        let config = PgConfig::from_url("postgres://u@h/d").expect("valid");
        assert_eq!(
            (
                config.statement_timeout_ms(),
                config.idle_in_transaction_session_timeout_ms(),
                config.connect_timeout_ms()
            ),
            (
                DEFAULT_STATEMENT_TIMEOUT_MS,
                DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT_MS,
                DEFAULT_CONNECT_TIMEOUT_SECS * 1000
            )
        );
        assert_eq!(
            config.driver_config().get_options(),
            Some("-c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000")
        );
        let config = PgConfig::from_url(
            "postgres://u@h/d?options=-c%20work_mem%3D8MB&statement_timeout_ms=250&idle_in_transaction_session_timeout_ms=0&connect_timeout=3",
        )
        .expect("valid")
        .read_only_sessions();
        assert_eq!(
            config.driver_config().get_options(),
            Some("-c work_mem=8MB -c statement_timeout=250 -c idle_in_transaction_session_timeout=0 -c default_transaction_read_only=on")
        );
        assert_eq!(config.connect_timeout_ms(), 3_000);
        let config = config
            .with_statement_timeout_ms(1_500)
            .and_then(|config| config.with_connect_timeout_ms(700))
            .expect("in range");
        assert_eq!(config.statement_timeout_ms(), 1_500);
        assert_eq!(config.connect_timeout_ms(), 700);
        assert!(config
            .driver_config()
            .get_options()
            .is_some_and(|options| options.contains("-c statement_timeout=1500 ")));
        for url in [
            "postgres://u:pw1@h/d?statement_timeout_ms=-1",
            "postgres://u:pw1@h/d?statement_timeout_ms=5s",
            "postgres://u:pw1@h/d?idle_in_transaction_session_timeout_ms=9999999999",
        ] {
            match PgConfig::from_url(url) {
                Err(LogError::StoreConfig { reason, store }) => {
                    assert!(reason.contains("milliseconds"), "{url}: {reason}");
                    assert!(!store.contains("pw1"), "{store}");
                }
                other => panic!("{url}: expected StoreConfig, got {other:?}"),
            }
        }
        match PgConfig::from_url("postgres://u@h/d")
            .expect("valid")
            .with_connect_timeout_ms(0)
        {
            Err(LogError::StoreConfig { reason, .. }) => {
                assert!(reason.contains("connect timeout 0 ms"), "{reason}")
            }
            other => panic!("expected StoreConfig, got {other:?}"),
        }
    }

    #[test]
    fn redact_url_takes_the_password_out_of_any_url() {
        assert_eq!(
            redact_url("postgres://bob:hunter2@h:1/d?x=1&password=p"),
            "postgres://bob@h:1/d?x=1&password=***"
        );
        assert_eq!(redact_url("postgres://bob:x@h"), "postgres://bob@h");
        assert_eq!(redact_url("postgres://h/d"), "postgres://h/d");
        assert_eq!(
            redact_url("postgres://admin:p@ssw0rd@127.0.0.1:1/db"),
            "postgres://admin@127.0.0.1:1/db"
        );
        assert_eq!(
            redact_url("postgres://admin:hunter2"),
            "postgres://admin:***"
        );
        assert_eq!(
            redact_url("postgres://h:5432,g:x/d"),
            "postgres://h:5432,g:***/d"
        );
        assert_eq!(
            redact_url("postgres://[::1]:5432/d"),
            "postgres://[::1]:5432/d"
        );
    }

    #[test]
    fn a_raw_at_sign_in_the_password_is_refused_without_showing_the_password() {
        let error = PgConfig::from_url("postgres://admin:p@ssw0rd@127.0.0.1:1/db")
            .expect_err("two '@' in the user part");
        assert_eq!(
            error.to_string(),
            "store postgres://admin@127.0.0.1:1/db: the URL's user part holds more than one '@': write an '@' in a user name or password as %40"
        );
        let error = PgConfig::from_url("postgres://admin:hunter2").expect_err("no host");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn a_user_name_with_a_colon_is_shown_encoded() {
        let config =
            PgConfig::from_url("postgres://u%3ASeCret@h:5432/d?sslmode=disable").expect("a URL");
        assert_eq!(
            config.redacted(),
            "postgres://u%3ASeCret@h:5432/d?sslmode=disable"
        );
    }
}
