//! The server's TLS identity: its certificate chain and key, the rustls
//! config new connections are made from, and the fingerprint clients pin.
//!
//! Invariants:
//! - Without `--tls-cert`/`--tls-key`, a self-signed pair is generated once
//!   into the data dir (`tls-cert.pem`, `tls-key.pem`; the key 0600, written
//!   to a temp file and renamed, so a crash never leaves half a key) and
//!   reused ever after: the fingerprint clients pinned stays valid.
//! - [`TlsIdentity::reload`] swaps the config only when the new pair loads
//!   and matches; on any error the old pair keeps serving. Connections
//!   already open keep the config they were made with.
//! - The crypto provider is rustls' `ring` one, nothing else.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::tls::Fingerprint;

/// TLS connections whose handshake may advance per loop turn: a burst of
/// handshakes is sliced like password hashing, so other clients' lines are
/// still answered within a turn's time.
pub const HANDSHAKE_BUDGET: usize = 64;

/// What is left of [`HANDSHAKE_BUDGET`] in this loop turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeBudget {
    left: usize,
}

impl Default for HandshakeBudget {
    fn default() -> Self {
        HandshakeBudget {
            left: HANDSHAKE_BUDGET,
        }
    }
}

impl HandshakeBudget {
    /// At the start of every loop turn.
    pub fn new_turn(&mut self) {
        self.left = HANDSHAKE_BUDGET;
    }

    /// May a connection's input be worked on now? Only handshake work
    /// counts; false means "read it next turn" (it is not lost).
    pub fn admit(&mut self, handshaking: bool) -> bool {
        if !handshaking {
            return true;
        }
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }
}

/// File names of the generated pair inside the data dir.
pub const GENERATED_CERT: &str = "tls-cert.pem";
pub const GENERATED_KEY: &str = "tls-key.pem";

/// From which source addresses passwords may travel without TLS (`--plaintext`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlaintextPolicy {
    /// Only from loopback (127.0.0.0/8, ::1): nothing crosses a network.
    #[default]
    Loopback,
    Any,
}

impl PlaintextPolicy {
    pub fn parse(s: &str) -> Result<PlaintextPolicy, String> {
        match s {
            "loopback" => Ok(PlaintextPolicy::Loopback),
            "any" => Ok(PlaintextPolicy::Any),
            _ => Err(format!("{s:?}: expected loopback or any")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlaintextPolicy::Loopback => "loopback",
            PlaintextPolicy::Any => "any",
        }
    }

    /// May a plaintext connection from `ip` send a password?
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            PlaintextPolicy::Any => true,
            PlaintextPolicy::Loopback => ip.to_canonical().is_loopback(),
        }
    }
}

/// Where the certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The pair is ours to create in the data dir when absent.
    pub generated: bool,
}

impl TlsPaths {
    /// `--tls-cert`/`--tls-key` when given (both or neither), else the data dir pair.
    pub fn resolve(
        data_dir: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<TlsPaths, String> {
        match (cert, key) {
            (Some(c), Some(k)) => Ok(TlsPaths {
                cert: c.to_path_buf(),
                key: k.to_path_buf(),
                generated: false,
            }),
            (None, None) => Ok(TlsPaths {
                cert: data_dir.join(GENERATED_CERT),
                key: data_dir.join(GENERATED_KEY),
                generated: true,
            }),
            _ => Err("--tls-cert and --tls-key go together: give both or neither".into()),
        }
    }
}

/// The loaded pair and the rustls config made from it.
pub struct TlsIdentity {
    paths: TlsPaths,
    config: Arc<ServerConfig>,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsIdentity")
            .field("cert", &self.paths.cert)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl TlsIdentity {
    /// Loads the pair, generating it first when it is ours and absent.
    pub fn load(paths: TlsPaths) -> Result<TlsIdentity, String> {
        if paths.generated {
            ensure_generated(&paths)?;
        }
        let (config, fingerprint) = build(&paths)?;
        Ok(TlsIdentity {
            paths,
            config,
            fingerprint,
        })
    }

    /// The config for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn cert_path(&self) -> &Path {
        &self.paths.cert
    }

    /// Reads the pair again (SIGHUP: renewal without restart); new
    /// connections use it. On error the current pair stays and the error is
    /// returned. `Ok(Some(old))` when the key changed, `Ok(None)` when only
    /// the certificate did (or nothing).
    pub fn reload(&mut self) -> Result<Option<Fingerprint>, String> {
        self.reload_from(self.paths.clone())
    }

    /// [`TlsIdentity::reload`] from `paths` (the reloaded configuration may
    /// name other files); they replace the current ones only on success.
    pub fn reload_from(&mut self, paths: TlsPaths) -> Result<Option<Fingerprint>, String> {
        if paths.generated {
            ensure_generated(&paths)?;
        }
        let (config, fingerprint) = build(&paths)?;
        let old = self.fingerprint;
        self.paths = paths;
        self.config = config;
        self.fingerprint = fingerprint;
        Ok((old != fingerprint).then_some(old))
    }
}

/// Validates the pair without generating anything (`--check`): a pair to be
/// generated at first start is fine; present files must load and match.
pub fn check(paths: &TlsPaths) -> Result<(), String> {
    if paths.generated && !paths.cert.exists() && !paths.key.exists() {
        return Ok(());
    }
    if paths.generated {
        ensure_generated(paths)?;
    }
    build(paths).map(|_| ())
}

/// The fingerprint clients will see for this configuration, generating the
/// data dir pair first if it is ours and absent (`peerline-server fingerprint`).
pub fn fingerprint_of(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Fingerprint, String> {
    fingerprint_of_paths(&TlsPaths::resolve(data_dir, cert, key)?)
}

/// [`fingerprint_of`] for already resolved paths (a validated `Config::tls`).
/// Generating is only safe under the data-dir lock, or where no server can
/// run: `peerline-server fingerprint` goes through `admin_cli::fingerprint`.
pub fn fingerprint_of_paths(paths: &TlsPaths) -> Result<Fingerprint, String> {
    if paths.generated {
        ensure_generated(paths)?;
    }
    read_fingerprint(paths)
}

/// The fingerprint of the certificate as it is on disk; never generates.
pub fn read_fingerprint(paths: &TlsPaths) -> Result<Fingerprint, String> {
    let chain = read_chain(&paths.cert)?;
    Fingerprint::of_cert(&chain[0]).map_err(|e| format!("{}: {e}", paths.cert.display()))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificate {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(chain)
}

fn build(paths: &TlsPaths) -> Result<(Arc<ServerConfig>, Fingerprint), String> {
    let chain = read_chain(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| format!("cannot read private key {}: {e}", paths.key.display()))?;
    let fingerprint =
        Fingerprint::of_cert(&chain[0]).map_err(|e| format!("{}: {e}", paths.cert.display()))?;
    let config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        // Also checks that the key belongs to the certificate.
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable pair: {e}",
                paths.cert.display(),
                paths.key.display()
            )
        })?;
    Ok((Arc::new(config), fingerprint))
}

/// Creates the self-signed pair when neither file exists; one without the
/// other is an error (regenerating would silently change the identity).
fn ensure_generated(paths: &TlsPaths) -> Result<(), String> {
    match (paths.cert.exists(), paths.key.exists()) {
        (true, true) => return Ok(()),
        (false, false) => {}
        (true, false) | (false, true) => {
            return Err(format!(
                "only one of {} and {} exists; restore the other, or remove both to generate a new identity",
                paths.cert.display(),
                paths.key.display()
            ))
        }
    }
    if let Some(dir) = paths.cert.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "peerline".into()])
        .map_err(|e| format!("cannot generate a TLS certificate: {e}"))?;
    // The key first: a cert without its key would be the worse half to lose.
    write_new(&paths.key, ck.key_pair.serialize_pem().as_bytes())?;
    write_new(&paths.cert, ck.cert.pem().as_bytes())?;
    log::info!(
        "generated a self-signed TLS certificate {} (fingerprint {})",
        paths.cert.display(),
        Fingerprint::of_spki(&ck.key_pair.public_key_der())
    );
    Ok(())
}

/// Writes `bytes` to a 0600 temp file beside `path`, fsyncs, renames.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_once_key_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let fp = fingerprint_of(&data, None, None).unwrap();
        let mode = fs::metadata(data.join(GENERATED_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = TlsIdentity::load(TlsPaths::resolve(&data, None, None).unwrap()).unwrap();
        assert_eq!(id.fingerprint(), fp, "the second start reuses the pair");
        assert_eq!(fingerprint_of(&data, None, None).unwrap(), fp);
    }

    #[test]
    fn half_a_pair_or_half_the_flags_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fingerprint_of(dir.path(), None, None).unwrap();
        fs::remove_file(dir.path().join(GENERATED_KEY)).unwrap();
        let e = fingerprint_of(dir.path(), None, None).unwrap_err();
        assert!(e.contains("only one of"), "{e}");
        let e = TlsPaths::resolve(dir.path(), Some(Path::new("c.pem")), None).unwrap_err();
        assert!(e.contains("go together"), "{e}");
    }

    #[test]
    fn reload_swaps_to_a_new_pair_and_keeps_the_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths::resolve(dir.path(), None, None).unwrap();
        let mut id = TlsIdentity::load(paths.clone()).unwrap();
        let first = id.fingerprint();
        assert_eq!(id.reload().unwrap(), None, "same files, same key");
        // A renewal: a new pair written over the old files.
        fs::remove_file(&paths.cert).unwrap();
        fs::remove_file(&paths.key).unwrap();
        ensure_generated(&paths).unwrap();
        assert_eq!(id.reload().unwrap(), Some(first));
        let second = id.fingerprint();
        assert_ne!(second, first);
        // A broken key file: the error is reported, the pair in use stays.
        fs::write(&paths.key, "not a key").unwrap();
        assert!(id.reload().is_err());
        assert_eq!(id.fingerprint(), second);
    }

    #[test]
    fn mismatched_cert_and_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fingerprint_of(&a, None, None).unwrap();
        fingerprint_of(&b, None, None).unwrap();
        let paths = TlsPaths {
            cert: a.join(GENERATED_CERT),
            key: b.join(GENERATED_KEY),
            generated: false,
        };
        let e = TlsIdentity::load(paths).unwrap_err();
        assert!(e.contains("usable pair"), "{e}");
    }

    #[test]
    fn handshake_work_is_bounded_per_turn_and_other_input_never_waits() {
        let mut b = HandshakeBudget::default();
        for i in 0..HANDSHAKE_BUDGET {
            assert!(b.admit(true), "handshake {i} of the turn");
            assert!(b.admit(false), "established connections are not counted");
        }
        assert!(!b.admit(true), "the 65th handshake waits for the next turn");
        assert!(!b.admit(true));
        assert!(b.admit(false), "lines of logged-in clients still go");
        b.new_turn();
        assert_eq!(
            (0..1000).filter(|_| b.admit(true)).count(),
            HANDSHAKE_BUDGET,
            "a storm of 1000 advances 64 per turn"
        );
    }

    #[test]
    fn only_loopback_may_send_passwords_in_clear_by_default() {
        let p = PlaintextPolicy::default();
        assert!(p.allows("127.0.0.1".parse().unwrap()));
        assert!(p.allows("127.0.0.2".parse().unwrap()));
        assert!(p.allows("::1".parse().unwrap()));
        assert!(p.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.allows("10.0.0.1".parse().unwrap()));
        assert!(!p.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(PlaintextPolicy::Any.allows("10.0.0.1".parse().unwrap()));
        assert_eq!(PlaintextPolicy::parse("any"), Ok(PlaintextPolicy::Any));
        assert!(PlaintextPolicy::parse("all").is_err());
    }
}
