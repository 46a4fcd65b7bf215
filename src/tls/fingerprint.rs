//! A server's identity as ssh shows it: `sha256:<64 hex>` of the DER
//! SubjectPublicKeyInfo of its certificate. Hashing the key, not the whole
//! certificate, keeps the pin valid across a renewal that keeps the key.
//!
//! The SPKI is found by walking the certificate's outer DER structure
//! (a dozen lines here rather than a full X.509 parser as a dependency);
//! the walk only skips fields and never trusts a length past the input.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// SHA-256 of a SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// The certificate is not DER of the shape X.509 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCertificate(pub &'static str);

impl fmt::Display for BadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed certificate: {}", self.0)
    }
}

impl Fingerprint {
    /// Fingerprint of the DER SubjectPublicKeyInfo itself.
    pub fn of_spki(spki_der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(spki_der).into())
    }

    /// Fingerprint of the key inside a DER X.509 certificate.
    pub fn of_cert(cert_der: &[u8]) -> Result<Fingerprint, BadCertificate> {
        Ok(Fingerprint::of_spki(spki_of(cert_der)?))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// `sha256:` followed by 64 hex digits (either case).
    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("{s:?} does not start with sha256:"))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| format!("{s:?}: sha256: must be followed by 64 hex digits"))?;
        Ok(Fingerprint(out))
    }
}

/// One DER element split off its input.
struct Tlv<'a> {
    tag: u8,
    /// Header and contents.
    whole: &'a [u8],
    contents: &'a [u8],
    rest: &'a [u8],
}

/// One DER TLV off the front of `input`.
fn tlv(input: &[u8]) -> Result<Tlv<'_>, BadCertificate> {
    let short = BadCertificate("truncated");
    let (&tag, rest) = input.split_first().ok_or(short.clone())?;
    let (&first, rest) = rest.split_first().ok_or(short.clone())?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(BadCertificate("bad length"));
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(short);
    }
    let header = input.len() - rest.len();
    Ok(Tlv {
        tag,
        whole: &input[..header + len],
        contents: &rest[..len],
        rest: &rest[len..],
    })
}

/// The DER SubjectPublicKeyInfo inside a certificate:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
/// serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, … } … }`.
pub fn spki_of(cert_der: &[u8]) -> Result<&[u8], BadCertificate> {
    const SEQUENCE: u8 = 0x30;
    let cert = tlv(cert_der)?;
    if cert.tag != SEQUENCE {
        return Err(BadCertificate("not a SEQUENCE"));
    }
    let tbs = tlv(cert.contents)?;
    if tbs.tag != SEQUENCE {
        return Err(BadCertificate("tbsCertificate is not a SEQUENCE"));
    }
    let mut rest = tbs.contents;
    // The version is an explicit [0] tag; absent means v1.
    let first = tlv(rest)?;
    if first.tag == 0xa0 {
        rest = first.rest;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = tlv(rest)?.rest;
    }
    let spki = tlv(rest)?;
    if spki.tag != SEQUENCE {
        return Err(BadCertificate("subjectPublicKeyInfo is not a SEQUENCE"));
    }
    Ok(spki.whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_walk_matches_the_key_rcgen_put_in() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let spki = spki_of(ck.cert.der()).unwrap();
        assert_eq!(spki, ck.key_pair.public_key_der().as_slice());
        let fp = Fingerprint::of_cert(ck.cert.der()).unwrap();
        assert_eq!(fp, Fingerprint::of_spki(&ck.key_pair.public_key_der()));
    }

    #[test]
    fn truncated_or_garbage_certificates_are_errors_not_panics() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = ck.cert.der().to_vec();
        for cut in 0..der.len() {
            assert!(spki_of(&der[..cut]).is_err(), "cut at {cut}");
        }
        assert!(spki_of(b"\x30\x84\xff\xff\xff\xff").is_err());
        assert!(spki_of(b"hello").is_err());
    }

    #[test]
    fn text_form_round_trips_and_rejects_junk() {
        let fp = Fingerprint([0xab; 32]);
        let s = fp.to_string();
        assert_eq!(s, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(s.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            s.to_uppercase()
                .replace("SHA256", "sha256")
                .parse::<Fingerprint>()
                .unwrap(),
            fp
        );
        assert!("md5:abcd".parse::<Fingerprint>().is_err());
        assert!("sha256:abcd".parse::<Fingerprint>().is_err());
        assert!(format!("sha256:{}", "zz".repeat(32))
            .parse::<Fingerprint>()
            .is_err());
    }
}
