//! The server's identity, checked like ssh checks a host key: a custom
//! rustls [`ServerCertVerifier`] that compares the certificate's SPKI
//! fingerprint with the pin for `host:port` in `known_servers`, with
//! `--fingerprint`, or (with `--ca`) verifies a CA-issued certificate by
//! host name instead.
//!
//! Invariants:
//! - Handshake signatures are always verified (rustls' own TLS 1.2/1.3
//!   signature checks against the presented key); only the "is this the
//!   right key" question is ours.
//! - A key that differs from the pin is refused whatever the flags say
//!   (`--accept-new` only pins keys never seen), and the refusal names the
//!   file and line to edit.
//! - An unknown key is asked about only when stdin is a terminal (on
//!   `/dev/tty`, before any password is sent: rustls holds queued lines until
//!   the handshake is done); otherwise it is refused unless `--accept-new` or
//!   `--fingerprint` says what to do.
//! - Every refusal leaves its message in [`ServerTls::take_refusal`], so the
//!   driver can exit 4 with it.

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, SignatureScheme};

use crate::tls::{Fingerprint, Layer};

/// How the client decides to trust the server (validated flags).
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    /// `--known-servers`, or the default path (None: no home to put it in).
    pub known_servers: Option<PathBuf>,
    /// `--fingerprint`: exactly this key.
    pub fingerprint: Option<Fingerprint>,
    /// `--accept-new`: pin an unknown key without asking.
    pub accept_new: bool,
    /// `--ca`: verify by CA and host name instead of pinning.
    pub ca: Option<PathBuf>,
    /// stdin is a terminal: an unknown key may be asked about.
    pub ask: bool,
}

/// `$XDG_CONFIG_HOME/peerline/known_servers`, else `~/.config/peerline/known_servers`.
pub fn default_known_servers() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if Path::new(&x).is_absolute() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("peerline").join("known_servers"))
}

/// How a server is named in `known_servers`: `host:port`, an IPv6 literal in
/// brackets, host names in lower case.
pub fn host_key(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    } else {
        format!("{}:{port}", host.to_ascii_lowercase())
    }
}

/// The pin for `key` in the text of a known_servers file: (1-based line, key).
/// Blank lines, `#` comments and lines that do not parse are skipped.
pub fn find_pin(text: &str, key: &str) -> Option<(usize, Fingerprint)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let mut fields = line.split_whitespace();
        let k = fields.next().filter(|k| !k.starts_with('#'))?;
        let fp = fields.next()?.parse().ok()?;
        (k == key).then_some((i + 1, fp))
    })
}

/// Appends a pin, creating the directory (0700) and file (0600) if needed.
fn append_pin(path: &Path, key: &str, fp: Fingerprint) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    // Start on a line of our own even if the file lacks a final newline.
    let needs_newline = fs::read(path).is_ok_and(|b| !b.is_empty() && !b.ends_with(b"\n"));
    let lead = if needs_newline { "\n" } else { "" };
    f.write_all(format!("{lead}{key} {fp}\n").as_bytes())?;
    f.sync_all()
}

/// Asks on `tty` whether to trust an unknown key; true only for "yes".
pub fn ask_about(
    tty_in: &mut impl BufRead,
    tty_out: &mut impl Write,
    key: &str,
    fp: Fingerprint,
    file: &Path,
) -> bool {
    let _ = write!(
        tty_out,
        "The server {key} is not known. Its key fingerprint is\n  {fp}\n\
         Compare it with `peerline-server fingerprint` on the server.\n\
         Trust it and remember it in {}? (yes/no) ",
        file.display()
    );
    let _ = tty_out.flush();
    let mut answer = String::new();
    if tty_in.read_line(&mut answer).is_err() {
        return false;
    }
    answer.trim().eq_ignore_ascii_case("yes")
}

fn ask_on_tty(key: &str, fp: Fingerprint, file: &Path) -> bool {
    let Ok(tty) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return false;
    };
    let Ok(mut out) = tty.try_clone() else {
        return false;
    };
    ask_about(&mut io::BufReader::new(tty), &mut out, key, fp, file)
}

#[derive(Debug)]
struct PinVerifier {
    key: String,
    opts: TrustOptions,
    ca: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl PinVerifier {
    fn refuse(&self, why: String) -> TlsError {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    }

    /// The pinning decision for a presented key.
    fn check_pin(&self, fp: Fingerprint) -> Result<(), String> {
        if let Some(want) = self.opts.fingerprint {
            if want == fp {
                return Ok(());
            }
            return Err(format!(
                "the server {} presents key {fp}, not the {want} given with --fingerprint",
                self.key
            ));
        }
        let Some(file) = &self.opts.known_servers else {
            return Err(format!(
                "the server {} presents key {fp}, and there is no known_servers file \
                 (no HOME); use --known-servers FILE or --fingerprint {fp}",
                self.key
            ));
        };
        let text = match fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        match find_pin(&text, &self.key) {
            Some((_, pinned)) if pinned == fp => Ok(()),
            Some((line, pinned)) => Err(format!(
                "THE KEY OF THE SERVER {} HAS CHANGED: it presents {fp}, but {}:{line} pins {pinned}. \
                 Someone may be intercepting the connection. If the server really has a new key, \
                 edit or delete line {line} of {} and connect again",
                self.key,
                file.display(),
                file.display()
            )),
            None => {
                let accepted = self.opts.accept_new
                    || (self.opts.ask && ask_on_tty(&self.key, fp, file));
                if !accepted {
                    return Err(format!(
                        "the server {} is not known; it presents key {fp}. Check it against \
                         `peerline-server fingerprint` on the server, then run with \
                         --fingerprint {fp} or --accept-new (or on a terminal, to be asked)",
                        self.key
                    ));
                }
                append_pin(file, &self.key, fp)
                    .map_err(|e| format!("cannot save the pin in {}: {e}", file.display()))?;
                log::info!("pinned {} as {fp} in {}", self.key, file.display());
                Ok(())
            }
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if let Some(ca) = &self.ca {
            return ca
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| {
                    self.refuse(format!(
                        "the certificate of {} does not verify with --ca: {e}",
                        self.key
                    ))
                });
        }
        let fp = Fingerprint::of_cert(end_entity)
            .map_err(|e| self.refuse(format!("the server {} sent a {e}", self.key)))?;
        self.check_pin(fp).map_err(|why| self.refuse(why))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the client needs to speak TLS to one server.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("name", &self.name)
            .finish()
    }
}

impl ServerTls {
    pub fn new(host: &str, port: u16, opts: TrustOptions) -> Result<ServerTls, String> {
        let provider = crate::tls::provider();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|_| format!("{host:?} is not a host name or address"))?;
        let ca = match &opts.ca {
            None => None,
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("cannot read --ca {}: {e}", path.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("--ca {}: no usable CA certificate", path.display()));
                }
                let v =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("--ca {}: {e}", path.display()))?;
                Some(v)
            }
        };
        let refusal = Arc::new(Mutex::new(None));
        let verifier = PinVerifier {
            key: host_key(host, port),
            opts,
            ca,
            provider: provider.clone(),
            refusal: refusal.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(ServerTls {
            config: Arc::new(config),
            name,
            refusal,
        })
    }

    /// A fresh TLS layer for a new connection to the server.
    pub fn layer(&self) -> Result<Layer, String> {
        rustls::ClientConnection::new(self.config.clone(), self.name.clone())
            .map(Layer::tls)
            .map_err(|e| format!("TLS setup: {e}"))
    }

    /// Why the last handshake's certificate was refused, once.
    pub fn take_refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_host_and_port() {
        assert_eq!(host_key("127.0.0.1", 4400), "127.0.0.1:4400");
        assert_eq!(host_key("Chat.Example.ORG", 4401), "chat.example.org:4401");
        assert_eq!(host_key("::1", 4400), "[::1]:4400");
        assert_eq!(host_key("[::1]", 4400), "[::1]:4400");
    }

    #[test]
    fn pins_are_found_by_exact_key_with_their_line() {
        let a = Fingerprint([1; 32]);
        let b = Fingerprint([2; 32]);
        let text = format!(
            "# peerline known servers\n\nexample.org:4400 {a}\ngarbage line\n127.0.0.1:4400 {b}\n127.0.0.1:4401 {a}\n"
        );
        assert_eq!(find_pin(&text, "127.0.0.1:4400"), Some((5, b)));
        assert_eq!(find_pin(&text, "127.0.0.1:4401"), Some((6, a)));
        assert_eq!(find_pin(&text, "example.org:4400"), Some((3, a)));
        assert_eq!(find_pin(&text, "127.0.0.1:440"), None);
        assert_eq!(
            find_pin(&format!("#127.0.0.1:4400 {a}"), "#127.0.0.1:4400"),
            None
        );
    }

    fn verifier(file: &Path, accept_new: bool, fingerprint: Option<Fingerprint>) -> PinVerifier {
        PinVerifier {
            key: "127.0.0.1:4400".into(),
            opts: TrustOptions {
                known_servers: Some(file.to_path_buf()),
                fingerprint,
                accept_new,
                ca: None,
                ask: false,
            },
            ca: None,
            provider: crate::tls::provider(),
            refusal: Arc::default(),
        }
    }

    #[test]
    fn unknown_refused_accept_new_pins_changed_always_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("known_servers");
        let (k1, k2) = (Fingerprint([7; 32]), Fingerprint([8; 32]));
        let e = verifier(&file, false, None).check_pin(k1).unwrap_err();
        assert!(
            e.contains("not known") && e.contains(&k1.to_string()),
            "{e}"
        );
        assert!(!file.exists(), "a refused key is not written");
        verifier(&file, true, None).check_pin(k1).unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("127.0.0.1:4400 {k1}\n")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        verifier(&file, false, None).check_pin(k1).unwrap();
        let e = verifier(&file, true, None).check_pin(k2).unwrap_err();
        assert!(e.contains(&format!("{}:1", file.display())), "{e}");
        assert!(e.contains("CHANGED"), "{e}");
        // --fingerprint decides alone.
        verifier(&file, false, Some(k2)).check_pin(k2).unwrap();
        assert!(verifier(&file, false, Some(k2)).check_pin(k1).is_err());
    }

    #[test]
    fn the_question_takes_only_yes() {
        let file = Path::new("/x/known_servers");
        let fp = Fingerprint([9; 32]);
        for (answer, want) in [
            ("yes\n", true),
            ("YES\n", true),
            ("y\n", false),
            ("no\n", false),
            ("", false),
        ] {
            let mut out = Vec::new();
            let got = ask_about(&mut answer.as_bytes(), &mut out, "h:1", fp, file);
            assert_eq!(got, want, "{answer:?}");
            let said = String::from_utf8(out).unwrap();
            assert!(said.contains(&fp.to_string()) && said.contains("/x/known_servers"));
        }
    }
}
