//! The console's credentials: an argon2 password hash from the configuration
//! and a bearer token read from a file at start. Both are checked without
//! revealing, through timing, how much of a wrong secret was right: argon2's
//! verifier compares in constant time, and tokens are compared as SHA-256
//! digests with `subtle`, so neither their contents nor their lengths leak.

use std::path::{Path, PathBuf};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Console;

/// What the console accepts.
#[derive(Clone)]
pub struct Credentials {
    /// The PHC string of the password (validated with the configuration).
    password_hash: Option<String>,
    /// The SHA-256 digest of the token file's contents, trimmed.
    token_digest: Option<[u8; 32]>,
}

/// Why the credentials could not be loaded or a hash made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the console token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("the console token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("the system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("cannot hash the password: {0}")]
    Hash(argon2::password_hash::Error),
}

// === impl Credentials ===

impl Credentials {
    /// Reads the token file (if any) once; a token changed on disk is picked up
    /// when the agent restarts, as every other configuration value.
    pub fn load(cfg: &Console) -> Result<Self, AuthError> {
        let token_digest = match &cfg.token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        Ok(Self {
            password_hash: cfg.password_hash.clone(),
            token_digest,
        })
    }

    /// Built from values, for tests.
    #[must_use]
    pub fn new(password_hash: Option<String>, token: Option<&str>) -> Self {
        Self {
            password_hash,
            token_digest: token.map(|t| Sha256::digest(t.trim().as_bytes()).into()),
        }
    }

    /// Whether `presented` is the token. Constant time in its contents.
    #[must_use]
    pub fn token_matches(&self, presented: &str) -> bool {
        let Some(expected) = &self.token_digest else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        bool::from(digest.ct_eq(expected))
    }

    /// Whether `presented` is the password. Slow by design (argon2): call it
    /// off the async threads.
    #[must_use]
    pub fn password_matches(&self, presented: &str) -> bool {
        let Some(phc) = &self.password_hash else {
            return false;
        };
        // Validated when the configuration was read; a hash that no longer
        // parses matches nothing.
        PasswordHash::new(phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(presented.as_bytes(), &h)
                .is_ok()
        })
    }

    /// What the login form accepts: the password or the token.
    #[must_use]
    pub fn secret_matches(&self, presented: &str) -> bool {
        self.token_matches(presented) || self.password_matches(presented)
    }
}

fn read_token(path: &Path) -> Result<[u8; 32], AuthError> {
    let text = std::fs::read_to_string(path).map_err(|error| AuthError::TokenFile {
        path: path.to_path_buf(),
        error,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(AuthError::EmptyToken {
            path: path.to_path_buf(),
        });
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// An argon2id PHC string of `password` with a fresh random salt and the
/// crate's default cost (19 MiB, two passes: OWASP's recommendation).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(AuthError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(AuthError::Hash)?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(AuthError::Hash)?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_and_nothing_else_does() {
        let phc = hash_password("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let c = Credentials::new(Some(phc.clone()), None);
        assert!(c.password_matches("correct horse"));
        assert!(!c.password_matches("correct horsE"));
        assert!(!c.token_matches("correct horse"));
        // A fresh salt each time.
        assert_ne!(phc, hash_password("correct horse").expect("hash"));
    }

    #[test]
    fn tokens_compare_whole_and_trimmed() {
        let c = Credentials::new(None, Some("0123456789abcdef0123\n"));
        assert!(c.token_matches("0123456789abcdef0123"));
        assert!(!c.token_matches("0123456789abcdef012"));
        assert!(!c.token_matches(""));
        assert!(c.secret_matches("0123456789abcdef0123"));
        assert!(!c.password_matches("0123456789abcdef0123"));
    }

    #[test]
    fn a_token_file_is_read_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t-s3cr3t-s3cr3t\n").expect("write");
        let cfg = Console {
            listen: crate::config::DEFAULT_CONSOLE_LISTEN,
            password_hash: None,
            token_file: Some(path.clone()),
            test_hooks: false,
        };
        let c = Credentials::load(&cfg).expect("load");
        assert!(c.token_matches("s3cr3t-s3cr3t-s3cr3t"));
        std::fs::write(&path, "\n").expect("write");
        let e = Credentials::load(&cfg).err().expect("empty");
        assert!(e.to_string().contains("is empty"), "{e}");
    }
}
