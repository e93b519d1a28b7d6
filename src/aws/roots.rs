//! Where the SDK's TLS trust roots are read from.
//!
//! The SDK (through `rustls-native-certs`) reads the system's roots once per process, at its
//! first connector. With neither `SSL_CERT_FILE` nor `SSL_CERT_DIR` set it reads the system's
//! bundle file **and** every file of the certificate directories it finds: on Debian-like
//! systems 146 more files (one per root, the same roots as the bundle, through symlinks), 9 to
//! 12 ms of a cold start's first AWS call on the development machine. On Lambda's
//! `provided.al2023` the directory holds the bundle itself and its OpenSSL "trusted" variant,
//! whose blocks the loader skips: the bundle is the whole trust store there.
//!
//! So, when neither variable is set and the system has a bundle file with a certificate in its
//! first 64 KiB, the function points `SSL_CERT_FILE` at it before anything reads the roots, and
//! the directories are not walked. Set `SSL_CERT_FILE` or `SSL_CERT_DIR` (or both) to choose the
//! roots yourself, e.g. to trust a certificate that is in a directory and not in the bundle:
//! the function then leaves both alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Where the roots will be read from, for the start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// `SSL_CERT_FILE` or `SSL_CERT_DIR` was set: the loader reads what they name.
    Configured,
    /// The system's bundle file alone (this module set `SSL_CERT_FILE` to it).
    Bundle(PathBuf),
    /// No bundle file with certificates: the loader probes the system as it would anyway.
    System,
}

impl std::fmt::Display for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Roots::Configured => f.write_str("SSL_CERT_FILE / SSL_CERT_DIR"),
            Roots::Bundle(path) => write!(f, "{} (the system's bundle)", path.display()),
            Roots::System => f.write_str("the system's certificate files and directories"),
        }
    }
}

/// What to do, from the two variables and the system's probed bundle file (pure: tested).
pub fn choose(
    cert_file: Option<OsString>,
    cert_dir: Option<OsString>,
    bundle: Option<PathBuf>,
    has_certificates: impl Fn(&Path) -> bool,
) -> Roots {
    if cert_file.is_some() || cert_dir.is_some() {
        return Roots::Configured;
    }
    match bundle {
        Some(path) if has_certificates(&path) => Roots::Bundle(path),
        _ => Roots::System,
    }
}

/// How much of the bundle is read to find its first certificate: a real bundle's first one is
/// in its first few kilobytes, and reading the whole file (about 220 KB on Debian) here cost
/// 0.3 ms of start-up. A bundle without one in its first 64 KiB is left to the loader's probe.
const LOOK_AT_MOST: u64 = 64 * 1024;

/// Whether the file at `path` holds a PEM certificate within its first [`LOOK_AT_MOST`] bytes.
fn holds_certificates(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(LOOK_AT_MOST).read_to_end(&mut head))
        .is_ok_and(|_| {
            head.windows(PEM_CERTIFICATE.len())
                .any(|window| window == PEM_CERTIFICATE)
        })
}

/// Reads the roots from the system's bundle file alone when nothing chose them (see the module).
///
/// # Safety
///
/// Sets an environment variable: call it before any other thread exists (first thing in
/// `main`, before the async runtime is built), as [`std::env::set_var`] requires.
pub unsafe fn prefer_bundle() -> Roots {
    let roots = choose(
        std::env::var_os("SSL_CERT_FILE"),
        std::env::var_os("SSL_CERT_DIR"),
        openssl_probe::probe().cert_file,
        holds_certificates,
    );
    if let Roots::Bundle(path) = &roots {
        // SAFETY: the caller guarantees that no other thread reads or writes the environment.
        unsafe { std::env::set_var("SSL_CERT_FILE", path) };
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Option<PathBuf> {
        Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt"))
    }

    #[test]
    fn a_root_variable_that_is_set_is_left_to_the_loader() {
        let yes = |_: &Path| true;
        assert_eq!(
            choose(Some("/x.pem".into()), None, bundle(), yes),
            Roots::Configured
        );
        assert_eq!(
            choose(None, Some("/etc/extra".into()), bundle(), yes),
            Roots::Configured
        );
    }

    #[test]
    fn the_bundle_alone_only_when_it_holds_certificates() {
        assert_eq!(
            choose(None, None, bundle(), |_| true),
            Roots::Bundle(PathBuf::from("/etc/ssl/certs/ca-certificates.crt"))
        );
        assert_eq!(choose(None, None, bundle(), |_| false), Roots::System);
        assert_eq!(choose(None, None, None, |_| true), Roots::System);
    }

    #[test]
    fn a_file_holds_certificates_when_it_has_a_pem_certificate_block() {
        let dir = std::env::temp_dir().join(format!("roots-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("bundle.pem");
        std::fs::write(
            &pem,
            b"# comment\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let trusted = dir.join("trusted.pem");
        std::fs::write(&trusted, b"-----BEGIN TRUSTED CERTIFICATE-----\nMIIB\n").unwrap();
        assert!(holds_certificates(&pem));
        assert!(!holds_certificates(&trusted));
        assert!(!holds_certificates(&dir.join("missing.pem")));
        let late = dir.join("late.pem");
        let mut text = vec![b'#'; LOOK_AT_MOST as usize];
        text.extend_from_slice(b"\n-----BEGIN CERTIFICATE-----\nMIIB\n");
        std::fs::write(&late, text).unwrap();
        assert!(
            !holds_certificates(&late),
            "past the first 64 KiB: left to the probe"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
