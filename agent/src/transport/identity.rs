//! Who a node is and which peer it trusts: generating a node's self-signed certificate
//! and key, loading them, and the pin that names the one peer certificate accepted.
//!
//! The key file is created with mode 0600 from its first byte (never written and then
//! restricted), and an existing key is only replaced when asked, through a temporary
//! file renamed over it so that a crash leaves either the old key or the new one.

use std::{
    fmt::Write as _,
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sha2::{Digest, Sha256};

use super::TransportError;

/// What [`keygen`] wrote, for the command line to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPaths {
    /// The certificate, PEM: give this file (or the fingerprint) to the peer.
    pub cert: PathBuf,
    /// The private key, PEM, mode 0600: it never leaves this node.
    pub key: PathBuf,
    /// The certificate's fingerprint, `sha256:<64 hex>`.
    pub fingerprint: String,
}

/// Writes `<dir>/<node>.crt` (a self-signed certificate naming `node`) and
/// `<dir>/<node>.key` (its private key). An existing key is replaced only with `force`.
pub fn keygen(dir: &Path, node: &str, force: bool) -> Result<KeyPaths, TransportError> {
    check_node_name(node)?;
    let cert_path = dir.join(format!("{node}.crt"));
    let key_path = dir.join(format!("{node}.key"));
    // Refuse before generating anything, so that nothing is written at all; the
    // create_new below closes the window between this check and the write.
    if !force && key_path.symlink_metadata().is_ok() {
        return Err(TransportError::KeyExists { path: key_path });
    }

    let mut params =
        rcgen::CertificateParams::new(vec![node.to_owned()]).map_err(TransportError::Generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node);
    // Expiry is never checked (the pin is exact), so the certificate is made to outlive
    // the installation: 9999-12-31 is RFC 5280's "no well-defined expiration date".
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    let key = rcgen::KeyPair::generate().map_err(TransportError::Generate)?;
    let cert = params.self_signed(&key).map_err(TransportError::Generate)?;

    write_key(&key_path, key.serialize_pem().as_bytes(), force)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, true)?;
    Ok(KeyPaths {
        cert: cert_path,
        key: key_path,
        fingerprint: fingerprint(cert.der()),
    })
}

/// The SHA-256 fingerprint of a DER certificate, as `sha256:<64 lowercase hex>`.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let mut out = String::with_capacity(7 + 64);
    out.push_str(FINGERPRINT_PREFIX);
    for byte in Sha256::digest(cert_der) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// This node's certificate and private key, as the TLS configurations need them.
#[derive(Debug)]
pub struct Identity {
    pub(super) cert: CertificateDer<'static>,
    pub(super) key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads a PEM certificate and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TransportError> {
        let cert_der = read_cert(cert)?;
        let pem = read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TransportError::BadKey {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Identity {
            cert: cert_der,
            key: key_der,
        })
    }

    /// The fingerprint of this node's certificate, for the peer's configuration.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// A copy, because rustls takes its key by value for each configuration.
    pub(super) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// The one peer certificate a node accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerPin {
    /// The peer's whole certificate, DER.
    Certificate(Vec<u8>),
    /// The SHA-256 of the peer's certificate DER.
    Fingerprint([u8; 32]),
}

impl PeerPin {
    /// Pins the (first) certificate of a PEM file, normally the peer's `<node>.crt`.
    pub fn from_cert_file(path: &Path) -> Result<PeerPin, TransportError> {
        Ok(PeerPin::Certificate(read_cert(path)?.to_vec()))
    }

    /// Pins a fingerprint written as `sha256:<64 hex>` (as [`fingerprint`] prints it).
    pub fn parse_fingerprint(input: &str) -> Result<PeerPin, TransportError> {
        let bad = |reason| TransportError::BadFingerprint {
            input: input.to_owned(),
            reason,
        };
        let hex = input
            .trim()
            .strip_prefix(FINGERPRINT_PREFIX)
            .ok_or_else(|| bad("it must start with \"sha256:\""))?;
        // Checked byte by byte first: from_str_radix alone would take a "+" sign.
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("it must have 64 hexadecimal digits after \"sha256:\""));
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        Ok(PeerPin::Fingerprint(digest))
    }

    /// The pinned certificate's SHA-256.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            PeerPin::Certificate(der) => Sha256::digest(der).into(),
            PeerPin::Fingerprint(digest) => *digest,
        }
    }

    /// The pin as `sha256:<64 hex>`, for logs and errors.
    pub fn describe(&self) -> String {
        let mut out = String::from(FINGERPRINT_PREFIX);
        for byte in self.digest() {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }

    /// Whether a certificate the peer presented is the pinned one.
    pub(super) fn matches(&self, cert_der: &[u8]) -> bool {
        match self {
            PeerPin::Certificate(der) => der.as_slice() == cert_der,
            PeerPin::Fingerprint(digest) => Sha256::digest(cert_der).as_slice() == digest,
        }
    }
}

const FINGERPRINT_PREFIX: &str = "sha256:";

/// The node name becomes two file names and the certificate's DNS name, so it must be
/// a DNS label: letters, digits and inner hyphens (dots are allowed between labels).
fn check_node_name(node: &str) -> Result<(), TransportError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if node.len() <= 253 && node.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(TransportError::BadNodeName {
            node: node.to_owned(),
        })
    }
}

/// The value of an ASCII hexadecimal digit (already checked to be one).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        // Not reached: every digit was checked first.
        _ => 0,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TransportError> {
    fs::read(path).map_err(|error| TransportError::File {
        path: path.to_owned(),
        error,
    })
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, TransportError> {
    let pem = read(path)?;
    CertificateDer::from_pem_slice(&pem).map_err(|e| TransportError::BadCertificate {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes the private key so that no other user can ever read it: created 0600, and
/// when replacing, written to a fresh 0600 temporary file then renamed over the old one.
fn write_key(path: &Path, pem: &[u8], force: bool) -> Result<(), TransportError> {
    if !force {
        return write_file(path, pem, 0o600, false);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from an interrupted run may have any mode; never reuse it.
    match fs::remove_file(&tmp) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(TransportError::File { path: tmp, error });
        }
        _ => {}
    }
    write_file(&tmp, pem, 0o600, false)?;
    fs::rename(&tmp, path).map_err(|error| TransportError::File {
        path: path.to_owned(),
        error,
    })
}

/// Writes a whole file with `mode` set at creation and syncs it. `replace` allows an
/// existing file to be truncated; otherwise the file must not exist yet.
fn write_file(path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<(), TransportError> {
    let io_err = |error| TransportError::File {
        path: path.to_owned(),
        error,
    };
    let mut options = OpenOptions::new();
    options.write(true).mode(mode);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|error: std::io::Error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            TransportError::KeyExists {
                path: path.to_owned(),
            }
        } else {
            io_err(error)
        }
    })?;
    file.write_all(data).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn keygen_writes_a_private_key_and_a_loadable_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = keygen(dir.path(), "node-a", false).expect("keygen");
        assert_eq!(paths.cert, dir.path().join("node-a.crt"));
        assert_eq!(paths.key, dir.path().join("node-a.key"));
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(
            mode(&paths.cert) & 0o7133,
            0,
            "certificate is writable by others"
        );

        let identity = Identity::load(&paths.cert, &paths.key).expect("load");
        assert_eq!(identity.fingerprint(), paths.fingerprint);
        let pin = PeerPin::from_cert_file(&paths.cert).expect("pin");
        assert_eq!(pin.describe(), paths.fingerprint);
        assert!(pin.matches(&identity.cert));
        assert_eq!(
            PeerPin::parse_fingerprint(&paths.fingerprint).expect("parse"),
            PeerPin::Fingerprint(pin.digest())
        );
    }

    #[test]
    fn keygen_refuses_to_overwrite_a_key_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = keygen(dir.path(), "n", false).expect("keygen");
        let old_key = fs::read(&first.key).expect("read");
        let err = keygen(dir.path(), "n", false).expect_err("second keygen must refuse");
        assert!(matches!(err, TransportError::KeyExists { ref path } if *path == first.key));
        assert!(err.to_string().contains("n.key"), "{err}");
        assert_eq!(fs::read(&first.key).expect("read"), old_key);

        // A stale temporary file with a loose mode must not become the key.
        let tmp = dir.path().join("n.key.tmp");
        fs::write(&tmp, b"junk").expect("write");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).expect("chmod");
        let second = keygen(dir.path(), "n", true).expect("forced keygen");
        assert_ne!(fs::read(&second.key).expect("read"), old_key);
        assert_ne!(second.fingerprint, first.fingerprint);
        assert_eq!(mode(&second.key), 0o600);
        assert!(!tmp.exists());
        Identity::load(&second.cert, &second.key).expect("the new pair loads");
    }

    #[test]
    fn keygen_refuses_names_that_are_not_dns_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [
            "", "../evil", "a/b", "node a", "-a", "a-", "a..b", ".a", "é",
        ] {
            let err = keygen(dir.path(), bad, false).expect_err(bad);
            assert!(
                matches!(err, TransportError::BadNodeName { .. }),
                "{bad}: {err}"
            );
        }
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
        keygen(dir.path(), "db-1.example", false).expect("a valid name");
    }

    #[test]
    fn fingerprint_has_its_documented_form() {
        let fp = fingerprint(b"not really a certificate");
        assert!(fp.starts_with("sha256:"));
        assert_eq!(fp.len(), 7 + 64);
        assert!(
            fp[7..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // SHA-256 of the empty string, a well-known value.
        assert_eq!(
            fingerprint(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn bad_fingerprints_are_refused_with_a_reason() {
        let inputs: [&str; 6] = [
            "",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0",
            "sha256:zz b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:+3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            &format!("sha256:é{}", "0".repeat(62)),
        ];
        for input in inputs {
            let err = PeerPin::parse_fingerprint(input).expect_err(input);
            assert!(
                matches!(err, TransportError::BadFingerprint { .. }),
                "{err}"
            );
        }
        // Upper case is accepted: people copy fingerprints from many tools.
        let upper = "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(
            PeerPin::parse_fingerprint(upper).expect("upper").describe(),
            upper.to_ascii_lowercase()
        );
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = keygen(dir.path(), "n", false).expect("keygen");
        let missing = dir.path().join("missing.key");
        let err = Identity::load(&paths.cert, &missing).expect_err("missing key");
        assert!(err.to_string().contains("missing.key"), "{err}");

        let garbage = dir.path().join("garbage.crt");
        fs::write(&garbage, b"hello").expect("write");
        let err = Identity::load(&garbage, &paths.key).expect_err("garbage cert");
        assert!(
            matches!(err, TransportError::BadCertificate { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("garbage.crt"), "{err}");
        // A certificate where the key should be is not a key.
        let err = Identity::load(&paths.cert, &paths.cert).expect_err("cert as key");
        assert!(matches!(err, TransportError::BadKey { .. }), "{err}");
        let err = PeerPin::from_cert_file(&paths.key).expect_err("key as cert");
        assert!(err.to_string().contains("n.key"), "{err}");
    }
}
