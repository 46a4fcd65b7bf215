//! The server's configuration: flags, `PEERLINE_*` environment and a TOML
//! `--config` file, merged and validated into [`Config`] and a [`Command`].
//!
//! Invariants:
//! - No clap type leaves this module; the rest of the server sees only
//!   validated values (a duration that would overflow `Instant` arithmetic or a
//!   zero timer is rejected here, never found later as a panic).
//! - Precedence is flag > environment > file > default, per setting. The file
//!   is turned into `--key value` arguments that go through the very same
//!   clap value parsers as flags, so a value means the same wherever it is
//!   written, and a bad one is reported naming the file.
//! - Parsing is pure apart from reading the `--config` file: SIGHUP reloads by
//!   parsing the same arguments again ([`Config::reload`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::engine::{self, EngineConfig};
use super::kdf;
use super::tls::{PlaintextPolicy, TlsPaths};
use crate::duration::parse_duration;

/// The longest any timer may be: far beyond any sensible setting, far below
/// what `Instant + Duration` can hold.
pub const MAX_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);
/// `EVENT WELCOME` must stay one line well under the 1024-byte line cap.
pub const MAX_WELCOME: usize = 512;
/// What `EVENT WELCOME` starts with unless `--welcome` says otherwise.
pub const DEFAULT_WELCOME: &str = "peerline";

/// A timer setting: a duration, longer than zero and at most [`MAX_TIMER`].
fn parse_timer(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    if d > MAX_TIMER {
        return Err("out of range (at most 365d)".into());
    }
    Ok(d)
}

fn parse_welcome(s: &str) -> Result<String, String> {
    if s.len() > MAX_WELCOME {
        return Err(format!("longer than {MAX_WELCOME} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character (it is sent as one line)".into());
    }
    Ok(s.trim().to_owned())
}

/// The settings every invocation shares (the server and its subcommands).
/// The doc comments are `--help`; keep defaults in step with `CONTRACT.md`.
#[derive(Args, Debug)]
struct ServerArgs {
    /// TOML file whose keys are the long flag names (`port = 4400`, `data-dir = "…"`)
    #[arg(long, global = true, env = "PEERLINE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for both sockets; `::` is dual-stack (IPv4 too), falling back to 0.0.0.0 where IPv6 is off
    #[arg(long, global = true, env = "PEERLINE_BIND", default_value = "::")]
    bind: IpAddr,
    /// TCP control port and UDP broadcast port (the same number); 0 picks a free one
    #[arg(long, global = true, env = "PEERLINE_PORT", default_value_t = 4400)]
    port: u16,
    /// Holds users.csv and the broadcast store; created if missing
    #[arg(
        long,
        global = true,
        env = "PEERLINE_DATA_DIR",
        default_value = "./peerline-data"
    )]
    data_dir: PathBuf,
    /// How long a broadcast stays deliverable to users who log in later (90s, 30m, 2h, 1d, or seconds)
    #[arg(long, global = true, env = "PEERLINE_BROADCAST_TTL", default_value = "30m", value_parser = parse_timer)]
    broadcast_ttl: Duration,
    /// How often a logged-in client must log in again
    #[arg(long, global = true, env = "PEERLINE_SESSION_TTL", default_value = "30m", value_parser = parse_timer)]
    session_ttl: Duration,
    /// How long a client has to answer EVENT REAUTH
    #[arg(long, global = true, env = "PEERLINE_REAUTH_GRACE", default_value = "2m", value_parser = parse_timer)]
    reauth_grace: Duration,
    /// How long an introduction request waits for ACCEPT or DENY
    #[arg(long, global = true, env = "PEERLINE_REQUEST_TTL", default_value = "60s", value_parser = parse_timer)]
    request_ttl: Duration,
    /// Connections that have not logged in are closed after this long without input
    #[arg(long, global = true, env = "PEERLINE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timer)]
    idle_timeout: Duration,
    /// Connections beyond this get EVENT CLOSING server-full and are closed
    #[arg(long, global = true, env = "PEERLINE_MAX_CLIENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_clients: u32,
    /// PBKDF2-HMAC-SHA256 iterations for new password hashes (about 32 ms per login at the default)
    #[arg(long, global = true, env = "PEERLINE_KDF_ITERATIONS", default_value_t = kdf::DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    kdf_iterations: u32,
    /// Text at the start of EVENT WELCOME (one line, MOTD-style)
    #[arg(long, global = true, env = "PEERLINE_WELCOME", default_value = DEFAULT_WELCOME, value_parser = parse_welcome)]
    welcome: String,
    /// Serve the counters in the Prometheus text format on http://ADDR/metrics (off unless given; keep it on loopback or a private network)
    #[arg(long, global = true, env = "PEERLINE_METRICS", value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// PEM certificate chain (with --tls-key); default: a self-signed pair generated once in the data dir
    #[arg(long, global = true, env = "PEERLINE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, global = true, env = "PEERLINE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// From which source addresses SIGNUP/LOGIN/PASSWD are accepted without TLS: loopback or any
    #[arg(long, global = true, env = "PEERLINE_PLAINTEXT", default_value = "loopback",
          value_parser = PlaintextPolicy::parse)]
    plaintext: PlaintextPolicy,
    /// Open connections per source address (IPv6: per /64) beyond this get EVENT CLOSING per-ip-limit; 0 = no limit
    #[arg(long, global = true, env = "PEERLINE_MAX_PER_IP", default_value_t = engine::DEFAULT_MAX_PER_IP)]
    max_per_ip: u32,
    /// A connection that has not logged in this long after connecting is closed, however busy it keeps itself
    #[arg(long, global = true, env = "PEERLINE_LOGIN_TIMEOUT", default_value = "2m", value_parser = parse_timer)]
    login_timeout: Duration,
    /// open: anyone may SIGNUP; closed: SIGNUP gets ERR signup-closed (accounts come from `user add`)
    #[arg(long, global = true, env = "PEERLINE_SIGNUP", value_enum, default_value_t = Signup::Open)]
    signup: Signup,
    /// Signups per source address per hour; 0 = no limit
    #[arg(long, global = true, env = "PEERLINE_SIGNUP_RATE", default_value_t = engine::DEFAULT_SIGNUP_RATE)]
    signup_rate: u32,
    /// Broadcasts per user per minute; 0 = no limit
    #[arg(long, global = true, env = "PEERLINE_BROADCAST_RATE", default_value_t = engine::DEFAULT_BROADCAST_RATE)]
    broadcast_rate: u32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Signup {
    Open,
    Closed,
}

#[derive(Parser, Debug)]
#[command(
    name = "peerline-server",
    version,
    about = "peerline rendezvous server: accounts, presence, P2P introductions, broadcasts",
    args_override_self = true
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    /// Validate the whole configuration, print the effective settings and exit (0 good, 2 bad)
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Manage accounts (through the running server if one runs on the data dir)
    User {
        #[command(subcommand)]
        action: UserSub,
    },
    /// Print the running server's counters, one `<name> <value>` per line (exit 1 if none runs)
    Stats,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_parser = clap::value_parser!(clap_complete::Shell))]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout
    Man,
    /// Print the server certificate's sha256:<hex> fingerprint (of its
    /// SubjectPublicKeyInfo), generating the pair first if the data dir has none
    Fingerprint,
}

#[derive(Subcommand, Debug)]
enum UserSub {
    /// Create an account
    Add {
        user: String,
        /// Read the password as one line from stdin instead of the terminal
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password
    Passwd {
        user: String,
        /// Read the password as one line from stdin instead of the terminal
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete the account (an online session of it is closed)
    Del { user: String },
    /// Refuse further logins (an online session of it is closed)
    Disable { user: String },
    /// Allow logins again
    Enable { user: String },
    /// One line per account: name, created (RFC 3339), enabled/disabled
    List,
}

/// Everything the server needs to start, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    /// `--bind` was left at `::`: fall back to `0.0.0.0` where IPv6 is off.
    pub bind_is_default: bool,
    pub port: u16,
    pub data_dir: PathBuf,
    pub config_file: Option<PathBuf>,
    /// `--metrics`: where to serve `GET /metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    pub engine: EngineConfig,
    /// Where the TLS certificate and key are (see `server/tls.rs`).
    pub tls: TlsPaths,
    /// Where each setting came from, by long flag name, for `--check`.
    sources: BTreeMap<String, Source>,
    /// The arguments this was parsed from, for [`Config::reload`].
    args: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// What this invocation is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run,
    Check,
    User(UserCommand),
    Stats,
    /// A completion script for the shell of this name.
    Completions {
        shell: String,
    },
    Man,
    /// Print the TLS fingerprint.
    Fingerprint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Add { user: String, password_stdin: bool },
    Passwd { user: String, password_stdin: bool },
    Del { user: String },
    Disable { user: String },
    Enable { user: String },
    List,
}

/// A parse that did not give a configuration.
#[derive(Debug)]
pub enum ConfigError {
    /// `--help` or `--version`: print this on stdout, exit 0.
    Info(String),
    /// Bad configuration: print this one line on stderr, exit 2.
    Bad(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Info(s) | ConfigError::Bad(s) => f.write_str(s),
        }
    }
}

/// A clap error as one line: its first line, without the `error: ` prefix.
fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("bad arguments").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

fn from_clap(e: clap::Error) -> ConfigError {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            ConfigError::Info(e.render().to_string())
        }
        _ => ConfigError::Bad(one_line(&e)),
    }
}

/// The settings a `--config` file may hold: (clap id, long flag name).
fn file_keys() -> Vec<(String, String)> {
    ServerArgs::augment_args(clap::Command::new("keys"))
        .get_arguments()
        .filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_owned())))
        .filter(|(_, long)| long != "config")
        .collect()
}

/// A TOML value as the text a flag would carry.
fn toml_value_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads `path` into `--key value` pairs for the settings that neither a flag
/// nor the environment gave (`given`). Every key is checked, given or not.
fn file_args(
    path: &Path,
    given: impl Fn(&str) -> bool,
) -> Result<(Vec<OsString>, Vec<String>), ConfigError> {
    let bad = |msg: String| ConfigError::Bad(format!("config file {}: {msg}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.message().to_owned()))?;
    let keys = file_keys();
    let mut all = vec![OsString::from("peerline-server")];
    let mut used = Vec::new();
    let mut from_file = Vec::new();
    for (key, value) in &table {
        let Some((id, long)) = keys.iter().find(|(_, long)| long == key) else {
            return Err(bad(format!(
                "unknown key `{key}` (keys are the long flag names: port, data-dir, …)"
            )));
        };
        let text = toml_value_text(value)
            .ok_or_else(|| bad(format!("`{key}` must be a string, an integer or a boolean")))?;
        let pair = [OsString::from(format!("--{long}")), OsString::from(text)];
        all.extend(pair.iter().cloned());
        if !given(id) {
            used.extend(pair);
            from_file.push(id.clone());
        }
    }
    // Every value in the file must be valid, even one a flag overrides today:
    // the file outlives this command line.
    Cli::try_parse_from(&all).map_err(|e| bad(one_line(&e)))?;
    Ok((used, from_file))
}

fn source_of(m: &ArgMatches, id: &str) -> Option<Source> {
    match m.value_source(id)? {
        ValueSource::CommandLine => Some(Source::Flag),
        ValueSource::EnvVariable => Some(Source::Env),
        _ => None,
    }
}

/// The command line with the `--config` file's settings put first, as flags
/// (so a flag after them wins: `args_override_self`), and the ids of the
/// settings the file gave.
fn with_file_settings(
    args: &[OsString],
    first: &ArgMatches,
    config_file: Option<&Path>,
) -> Result<(Vec<OsString>, Vec<String>), ConfigError> {
    let mut merged = vec![args
        .first()
        .cloned()
        .unwrap_or_else(|| "peerline-server".into())];
    let mut from_file = Vec::new();
    if let Some(path) = config_file {
        let (extra, ids) = file_args(path, |id| source_of(first, id).is_some())?;
        merged.extend(extra);
        from_file = ids;
    }
    merged.extend(args.iter().skip(1).cloned());
    Ok((merged, from_file))
}

/// Where each setting came from (`--check` prints it), by long flag name.
fn setting_sources(first: &ArgMatches, from_file: &[String]) -> BTreeMap<String, Source> {
    file_keys()
        .into_iter()
        .map(|(id, long)| {
            let source = if from_file.contains(&id) {
                Source::File
            } else {
                source_of(first, &id).unwrap_or(Source::Default)
            };
            (long, source)
        })
        .collect()
}

/// The subcommand (or `--check`, or running the server) the arguments ask for.
fn command_of(check: bool, sub: Option<Sub>) -> Result<Command, ConfigError> {
    Ok(match (check, sub) {
        (true, None) => Command::Check,
        (true, Some(_)) => {
            return Err(ConfigError::Bad(
                "--check runs alone, without a subcommand".into(),
            ))
        }
        (false, None) => Command::Run,
        (false, Some(Sub::Completions { shell })) => Command::Completions {
            shell: shell.to_string(),
        },
        (false, Some(Sub::Man)) => Command::Man,
        (false, Some(Sub::Stats)) => Command::Stats,
        (false, Some(Sub::User { action })) => Command::User(user_command(action)),
        (false, Some(Sub::Fingerprint)) => Command::Fingerprint,
    })
}

fn user_command(action: UserSub) -> UserCommand {
    match action {
        UserSub::Add {
            user,
            password_stdin,
        } => UserCommand::Add {
            user,
            password_stdin,
        },
        UserSub::Passwd {
            user,
            password_stdin,
        } => UserCommand::Passwd {
            user,
            password_stdin,
        },
        UserSub::Del { user } => UserCommand::Del { user },
        UserSub::Disable { user } => UserCommand::Disable { user },
        UserSub::Enable { user } => UserCommand::Enable { user },
        UserSub::List => UserCommand::List,
    }
}

impl ServerArgs {
    /// The engine's knobs among the settings.
    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            session_ttl: self.session_ttl,
            reauth_grace: self.reauth_grace,
            broadcast_ttl: self.broadcast_ttl,
            request_ttl: self.request_ttl,
            idle_timeout: self.idle_timeout,
            max_clients: self.max_clients as usize,
            kdf_iterations: self.kdf_iterations,
            welcome: self.welcome.clone(),
            plaintext: self.plaintext,
            max_per_ip: self.max_per_ip,
            login_timeout: self.login_timeout,
            signup_open: self.signup == Signup::Open,
            signup_rate: self.signup_rate,
            broadcast_rate: self.broadcast_rate,
            ..EngineConfig::default()
        }
    }
}

impl Config {
    /// Parses the process's arguments, environment and `--config` file.
    pub fn from_env() -> Result<(Config, Command), ConfigError> {
        Config::parse_args(std::env::args_os().collect())
    }

    /// Parses `args` (program name first) with the current environment.
    pub fn parse_args(args: Vec<OsString>) -> Result<(Config, Command), ConfigError> {
        let first = Cli::command()
            .try_get_matches_from(&args)
            .map_err(from_clap)?;
        let config_file = first.get_one::<PathBuf>("config").cloned();
        let (merged, from_file) = with_file_settings(&args, &first, config_file.as_deref())?;
        let matches = Cli::command()
            .try_get_matches_from(&merged)
            .map_err(from_clap)?;
        let cli = Cli::from_arg_matches(&matches).map_err(from_clap)?;
        let sources = setting_sources(&first, &from_file);
        let s = cli.server;
        let tls = TlsPaths::resolve(&s.data_dir, s.tls_cert.as_deref(), s.tls_key.as_deref())
            .map_err(ConfigError::Bad)?;
        let command = command_of(cli.check, cli.command)?;
        let engine = s.engine_config();
        let config = Config {
            tls,
            bind: s.bind,
            bind_is_default: s.bind == IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: s.port,
            data_dir: s.data_dir,
            config_file,
            metrics: s.metrics,
            engine,
            sources,
            args,
        };
        Ok((config, command))
    }

    /// Parses the same arguments again, re-reading the `--config` file (SIGHUP).
    pub fn reload(&self) -> Result<Config, String> {
        Config::parse_args(self.args.clone())
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
    }

    /// The checks `--check` adds to parsing: those that look at the machine.
    pub fn check_environment(&self) -> Result<(), String> {
        check_data_dir(&self.data_dir)?;
        super::tls::check(&self.tls)
    }

    /// The effective settings as TOML (a valid `--config` file), each with
    /// where it came from.
    pub fn describe(&self) -> String {
        let e = &self.engine;
        let dur = |d: Duration| format!("\"{}\"", format_duration(d));
        let values: Vec<(&str, String)> = vec![
            ("bind", format!("\"{}\"", self.bind)),
            ("port", self.port.to_string()),
            (
                "data-dir",
                toml::Value::String(self.data_dir.display().to_string()).to_string(),
            ),
            ("broadcast-ttl", dur(e.broadcast_ttl)),
            ("session-ttl", dur(e.session_ttl)),
            ("reauth-grace", dur(e.reauth_grace)),
            ("request-ttl", dur(e.request_ttl)),
            ("idle-timeout", dur(e.idle_timeout)),
            ("max-clients", e.max_clients.to_string()),
            ("kdf-iterations", e.kdf_iterations.to_string()),
            (
                "welcome",
                toml::Value::String(e.welcome.clone()).to_string(),
            ),
            (
                "tls-cert",
                toml::Value::String(self.tls.cert.display().to_string()).to_string(),
            ),
            (
                "tls-key",
                toml::Value::String(self.tls.key.display().to_string()).to_string(),
            ),
            ("plaintext", format!("\"{}\"", e.plaintext.as_str())),
            ("max-per-ip", e.max_per_ip.to_string()),
            ("login-timeout", dur(e.login_timeout)),
            (
                "signup",
                format!("\"{}\"", if e.signup_open { "open" } else { "closed" }),
            ),
            ("signup-rate", e.signup_rate.to_string()),
            ("broadcast-rate", e.broadcast_rate.to_string()),
        ];
        let mut out = String::new();
        if let Some(f) = &self.config_file {
            let _ = writeln!(out, "# config file: {}", f.display());
        }
        let mut values = values;
        match self.metrics {
            Some(a) => values.push(("metrics", format!("\"{a}\""))),
            // A line either way, so `changes_from` compares line by line.
            None => values.push(("# metrics", "off".into())),
        }
        for (key, value) in values {
            let from = match self.sources.get(key) {
                Some(Source::Flag) => "flag".to_owned(),
                Some(Source::Env) => format!("env {}", env_name(key)),
                Some(Source::File) => "file".to_owned(),
                Some(Source::Default) | None => "default".to_owned(),
            };
            let _ = writeln!(out, "{key} = {value}  # {from}");
        }
        out
    }

    /// Settings that differ from `old`, as `key: old -> new` (for the reload log).
    pub fn changes_from(&self, old: &Config) -> Vec<String> {
        let (a, b) = (old.describe(), self.describe());
        let strip = |l: &str| l.split("  #").next().unwrap_or(l).to_owned();
        a.lines()
            .zip(b.lines())
            .filter(|(x, y)| strip(x) != strip(y))
            .map(|(x, y)| {
                format!(
                    "{} -> {}",
                    strip(x),
                    strip(y).split(" = ").nth(1).unwrap_or("")
                )
            })
            .collect()
    }
}

/// Writes the completion script for `shell` (a name `Command::Completions` carries).
pub fn write_completions(shell: &str, out: &mut dyn std::io::Write) {
    let shell: clap_complete::Shell = shell.parse().expect("validated by clap");
    clap_complete::generate(shell, &mut Cli::command(), "peerline-server", out);
}

/// Writes `peerline-server(8)` in roff.
pub fn write_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command())
        .section("8")
        .render(out)
}

/// `PEERLINE_DATA_DIR` for `data-dir`.
fn env_name(long: &str) -> String {
    format!("PEERLINE_{}", long.replace('-', "_").to_uppercase())
}

/// The shortest exact form `parse_duration` reads back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// The data dir is usable: a writable directory, or creatable in a writable parent.
fn check_data_dir(dir: &Path) -> Result<(), String> {
    let writable = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: a valid NUL-terminated path.
        Some(unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0)
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format!("data dir {} is not a directory", dir.display())),
        Ok(_) if writable(dir) != Some(true) => {
            Err(format!("data dir {} is not writable", dir.display()))
        }
        Ok(_) => Ok(()),
        Err(_) => {
            let mut parent = dir.parent();
            while let Some(p) = parent {
                let p = if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                };
                if p.exists() {
                    return if p.is_dir() && writable(p) == Some(true) {
                        Ok(())
                    } else {
                        Err(format!(
                            "data dir {} does not exist and {} is not a writable directory",
                            dir.display(),
                            p.display()
                        ))
                    };
                }
                parent = p.parent();
            }
            Err(format!("data dir {} cannot be created", dir.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Config, Command), ConfigError> {
        Config::parse_args(args.iter().map(OsString::from).collect())
    }

    fn cfg(args: &[&str]) -> Config {
        parse(args).unwrap().0
    }

    fn bad(args: &[&str]) -> String {
        match parse(args) {
            Err(ConfigError::Bad(msg)) => msg,
            other => panic!("{args:?} should be bad configuration, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = cfg(&["peerline-server"]);
        assert_eq!(c.port, 4400);
        assert_eq!(c.bind.to_string(), "::");
        assert!(c.bind_is_default);
        assert_eq!(c.data_dir, PathBuf::from("./peerline-data"));
        assert_eq!(c.engine.broadcast_ttl, Duration::from_secs(1800));
        assert_eq!(c.engine.session_ttl, Duration::from_secs(1800));
        assert_eq!(c.engine.reauth_grace, Duration::from_secs(120));
        assert_eq!(c.engine.max_clients, 10_000);
        assert_eq!(c.engine.welcome, DEFAULT_WELCOME);
        assert_eq!(c.engine.max_per_ip, 16);
        assert_eq!(c.engine.login_timeout, Duration::from_secs(120));
        assert!(c.engine.signup_open);
        assert_eq!(c.engine.signup_rate, 5);
        assert_eq!(c.engine.broadcast_rate, 30);
        assert_eq!(parse(&["s"]).unwrap().1, Command::Run);
        assert_eq!(c.engine.plaintext, PlaintextPolicy::Loopback);
        assert_eq!(c.tls.cert, PathBuf::from("./peerline-data/tls-cert.pem"));
        assert!(c.tls.generated);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(bad(&["s", "--session-ttl", "5x"]).contains("--session-ttl"));
        bad(&["s", "--kdf-iterations", "0"]);
        bad(&["s", "--max-clients", "0"]);
        bad(&["s", "--port", "70000"]);
        assert!(bad(&["s", "--tls-cert", "c.pem"]).contains("--tls-key"));
        bad(&["s", "--plaintext", "never"]);
        assert_eq!(
            parse(&["s", "fingerprint", "--data-dir", "/z"]).unwrap().1,
            Command::Fingerprint
        );
        let c = cfg(&["s", "--session-ttl", "90s", "--reauth-grace", "2"]);
        assert_eq!(c.engine.session_ttl, Duration::from_secs(90));
        assert_eq!(c.engine.reauth_grace, Duration::from_secs(2));
        bad(&["s", "--signup", "maybe"]);
        bad(&["s", "--login-timeout", "0"]);
        let c = cfg(&["s", "--signup", "closed", "--max-per-ip", "0"]);
        assert!(!c.engine.signup_open);
        assert_eq!(c.engine.max_per_ip, 0);
    }

    /// Defect 10 of issue 10: these were accepted and panicked or made the
    /// server unusable later.
    #[test]
    fn out_of_range_timers_are_bad_configuration() {
        for flag in [
            "--session-ttl",
            "--reauth-grace",
            "--broadcast-ttl",
            "--request-ttl",
            "--idle-timeout",
        ] {
            for value in [
                "0",
                "0s",
                "0ms",
                "10000000000000000000",
                "366d",
                "9999999999h",
            ] {
                let msg = bad(&["s", flag, value]);
                assert!(msg.contains(flag) && msg.contains(value), "{msg}");
                assert!(!msg.contains('\n'), "one line: {msg:?}");
            }
            assert!(parse(&["s", flag, "365d"]).is_ok());
        }
    }

    #[test]
    fn welcome_is_one_line() {
        assert_eq!(cfg(&["s", "--welcome", "Hi all"]).engine.welcome, "Hi all");
        bad(&["s", "--welcome", "two\nlines"]);
        bad(&["s", "--welcome", &"x".repeat(MAX_WELCOME + 1)]);
    }

    #[test]
    fn subcommands_take_the_server_flags_anywhere() {
        let (c, cmd) = parse(&["s", "completions", "bash", "--data-dir", "/x"]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(
            cmd,
            Command::Completions {
                shell: "bash".into()
            }
        );
        let (c, cmd) = parse(&["s", "--data-dir", "/y", "man"]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/y"));
        assert_eq!(cmd, Command::Man);
        assert_eq!(parse(&["s", "--check"]).unwrap().1, Command::Check);
        bad(&["s", "--check", "man"]);
        bad(&["s", "completions", "cmd.exe"]);
        let (c, cmd) = parse(&[
            "s",
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--data-dir",
            "/z",
        ])
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/z"));
        assert_eq!(
            cmd,
            Command::User(UserCommand::Add {
                user: "bob".into(),
                password_stdin: true
            })
        );
        assert_eq!(parse(&["s", "stats"]).unwrap().1, Command::Stats);
        assert_eq!(
            parse(&["s", "user", "list"]).unwrap().1,
            Command::User(UserCommand::List)
        );
    }

    #[test]
    fn completions_and_man_page_name_the_flags() {
        let mut out = Vec::new();
        write_completions("bash", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("--data-dir") && text.contains("--check"),
            "{text}"
        );
        let mut out = Vec::new();
        write_man_page(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r"peerline\-server") && text.contains("PEERLINE_DATA_DIR"));
    }

    fn write_file(dir: &Path, text: &str) -> String {
        let p = dir.join("peerline.toml");
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    // Environment variables are process-wide: the precedence test that needs
    // them runs as an end-to-end test on a child process. Here: file vs flag.
    #[test]
    fn file_values_lose_to_flags_and_beat_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let f = write_file(
            tmp.path(),
            "port = 4500\ndata-dir = \"/srv/p\"\nsession-ttl = \"2h\"\nidle-timeout = 30\n",
        );
        let c = cfg(&["s", "--config", &f, "--port", "4600"]);
        assert_eq!(c.port, 4600);
        assert_eq!(c.data_dir, PathBuf::from("/srv/p"));
        assert_eq!(c.engine.session_ttl, Duration::from_secs(7200));
        assert_eq!(c.engine.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.engine.reauth_grace, Duration::from_secs(120));
        let d = c.describe();
        assert!(d.contains("port = 4600  # flag"), "{d}");
        assert!(d.contains("data-dir = \"/srv/p\"  # file"), "{d}");
        assert!(d.contains("reauth-grace = \"2m\"  # default"), "{d}");
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        for (text, needle) in [
            ("prot = 1\n", "unknown key `prot`"),
            ("port = \n", "config file"),
            ("session-ttl = \"0\"\n", "--session-ttl"),
            ("port = 1.5\n", "`port` must be"),
            ("config = \"x\"\n", "unknown key `config`"),
        ] {
            let f = write_file(tmp.path(), text);
            // A flag overriding it does not excuse a bad value in the file.
            let msg = bad(&["s", "--config", &f, "--session-ttl", "1h"]);
            assert!(msg.contains(needle) && msg.contains(&f), "{text:?}: {msg}");
        }
        let msg = bad(&["s", "--config", "/nonexistent/peerline.toml"]);
        assert!(msg.contains("/nonexistent/peerline.toml"), "{msg}");
    }

    #[test]
    fn described_settings_read_back_as_the_same_config() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(&[
            "s",
            "--session-ttl",
            "1500ms",
            "--welcome",
            "say \"hi\"",
            "--port",
            "9",
        ]);
        let f = write_file(tmp.path(), &c.describe());
        let back = cfg(&["s", "--config", &f]);
        let settings = |c: &Config| -> Vec<String> {
            let d = c.describe();
            d.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split("  #").next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(settings(&back), settings(&c));
        assert!(back.describe().contains("# file"));
    }

    #[test]
    fn reload_rereads_the_file_and_reports_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let f = write_file(tmp.path(), "welcome = \"one\"\n");
        let c = cfg(&["s", "--config", &f]);
        write_file(tmp.path(), "welcome = \"two\"\nsession-ttl = \"1h\"\n");
        let n = c.reload().unwrap();
        assert_eq!(n.engine.welcome, "two");
        let changes = n.changes_from(&c);
        assert_eq!(
            changes,
            vec![
                "session-ttl = \"30m\" -> \"1h\"",
                "welcome = \"one\" -> \"two\""
            ]
        );
        write_file(tmp.path(), "welcome = 1.5\n");
        assert!(c.reload().unwrap_err().contains("welcome"));
    }

    #[test]
    fn durations_format_as_they_parse() {
        for s in ["1500ms", "90s", "30m", "2h", "1d", "61s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn data_dir_checks() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(check_data_dir(tmp.path()).is_ok());
        assert!(check_data_dir(&tmp.path().join("new/sub")).is_ok());
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(check_data_dir(&file)
            .unwrap_err()
            .contains("not a directory"));
        assert!(check_data_dir(&file.join("sub")).is_err());
    }
}
