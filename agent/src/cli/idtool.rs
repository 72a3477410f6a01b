//! `zt-agent idtool`: zerotier-idtool's identity commands, with its texts and exit codes.
//!
//! Identities print and are written without a trailing newline, as ZeroTier One does.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use node_core::Identity;
use rand_core::OsRng;

use crate::home::{write_atomic, PUBLIC_MODE, SECRET_MODE};

#[derive(Debug, Subcommand)]
pub enum IdtoolCommand {
    /// Generate an identity; print it, or write identity.secret (and identity.public).
    Generate {
        secret_path: Option<PathBuf>,
        public_path: Option<PathBuf>,
        /// Hex prefix the address must start with (each digit costs 16x the time).
        vanity: Option<String>,
    },
    /// Check an identity (a file, or the identity string itself).
    Validate { identity: String },
    /// Print the public identity of a secret identity.
    Getpublic { identity: String },
    /// Sign a file: prints the 96-byte signature in hex.
    Sign { identity: String, file: PathBuf },
    /// Verify a file's signature (hex, or a file holding the hex).
    Verify {
        identity: String,
        file: PathBuf,
        signature: String,
    },
}

/// Runs one command, writing as zerotier-idtool does; returns the exit code.
pub fn run(command: &IdtoolCommand, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match execute(command, out) {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(err, "{message}");
            1
        }
    }
}

fn execute(command: &IdtoolCommand, out: &mut dyn Write) -> Result<(), String> {
    match command {
        IdtoolCommand::Generate {
            secret_path,
            public_path,
            vanity,
        } => {
            let identity = generate(vanity.as_deref())?;
            let secret = identity
                .to_secret_string()
                .ok_or_else(|| "generated identity lacks its secret".to_string())?;
            let Some(secret_path) = secret_path else {
                return print(out, &secret);
            };
            write_atomic(secret_path, secret.as_bytes(), SECRET_MODE)
                .map_err(|e| format!("Error writing to {} ({e})", secret_path.display()))?;
            print(out, &format!("{} written\n", secret_path.display()))?;
            if let Some(public_path) = public_path {
                write_atomic(public_path, identity.to_string().as_bytes(), PUBLIC_MODE)
                    .map_err(|e| format!("Error writing to {} ({e})", public_path.display()))?;
                print(out, &format!("{} written\n", public_path.display()))?;
            }
            Ok(())
        }
        IdtoolCommand::Validate { identity } => {
            let id = identity_from_arg(identity)?;
            if !id.locally_validate() {
                return Err(format!("{identity} FAILED validation."));
            }
            print(out, &format!("{identity} is a valid identity\n"))
        }
        IdtoolCommand::Getpublic { identity } => {
            let id = identity_from_arg(identity)?;
            print(out, &id.to_string())
        }
        IdtoolCommand::Sign { identity, file } => {
            let id = identity_from_arg(identity)?;
            if !id.has_secret() {
                return Err(format!(
                    "{identity} does not contain a private key (must use private to sign)"
                ));
            }
            let data = fs::read(file).map_err(|_| format!("{} is not readable", file.display()))?;
            let signature = id.sign(&data).ok_or_else(|| {
                format!("{identity} does not contain a private key (must use private to sign)")
            })?;
            print(out, &hex::encode(signature))
        }
        IdtoolCommand::Verify {
            identity,
            file,
            signature,
        } => {
            let id = identity_from_arg(identity)?;
            let data = fs::read(file).map_err(|_| format!("{} is not readable", file.display()))?;
            if signature_matches(&id, &data, signature) {
                print(out, &format!("{} signature valid\n", file.display()))
            } else {
                Err(format!("{} signature check FAILED", file.display()))
            }
        }
    }
}

/// The signature argument is hex; failing that, a file holding the hex (as zerotier-idtool).
fn signature_matches(id: &Identity, data: &[u8], signature_arg: &str) -> bool {
    let verifies =
        |hex_text: &str| hex::decode(hex_text.trim()).is_ok_and(|sig| id.verify(data, &sig));
    verifies(signature_arg) || fs::read_to_string(signature_arg).is_ok_and(|t| verifies(&t))
}

/// An identity given on the command line: the string itself when it looks like one
/// (a ':' after the 10 address digits), else the name of a file holding it.
pub fn identity_from_arg(arg: &str) -> Result<Identity, String> {
    let invalid = || format!("Identity argument invalid or file unreadable: {arg}");
    let text = if arg.len() > 32 && arg.as_bytes().get(10) == Some(&b':') {
        arg.to_string()
    } else {
        fs::read_to_string(arg).map_err(|_| invalid())?
    };
    text.trim().parse::<Identity>().map_err(|_| invalid())
}

fn generate(vanity: Option<&str>) -> Result<Identity, String> {
    let Some(vanity) = vanity else {
        return Ok(Identity::generate(&mut OsRng));
    };
    if vanity.is_empty() || !vanity.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("vanity prefix is not hex: {vanity}"));
    }
    let digits = vanity.len().min(10);
    let prefix = u64::from_str_radix(&vanity[..digits], 16)
        .map_err(|_| format!("vanity prefix is not hex: {vanity}"))?;
    let shift = 40 - 4 * digits as u32;
    loop {
        let identity = Identity::generate(&mut OsRng);
        let address = identity.address().to_u64();
        if address >> shift == prefix {
            eprintln!("vanity address: found {:010x} !", address);
            return Ok(identity);
        }
        eprintln!(
            "vanity address: tried {address:010x} looking for first {} bits of {:010x}",
            4 * digits,
            prefix << shift
        );
    }
}

fn print(out: &mut dyn Write, text: &str) -> Result<(), String> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::home::tests::TempDir;

    /// (KNOWN_GOOD_IDENTITY, KNOWN_BAD_IDENTITY) from ZeroTier One's selftest.
    pub(crate) fn selftest_identities() -> (String, String) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/zt-vl1-selftest-vectors.json"
        );
        let text = fs::read_to_string(path).expect("selftest vectors present");
        let json: serde_json::Value = serde_json::from_str(&text).expect("vectors are JSON");
        let field = |name: &str| json[name].as_str().expect("identity field").to_string();
        (field("KNOWN_GOOD_IDENTITY"), field("KNOWN_BAD_IDENTITY"))
    }

    fn run_capture(command: IdtoolCommand) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&command, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).expect("utf8"),
            String::from_utf8(err).expect("utf8"),
        )
    }

    #[test]
    fn validate_known_good_and_bad() {
        let (good, bad) = selftest_identities();
        let (code, out, _) = run_capture(IdtoolCommand::Validate {
            identity: good.clone(),
        });
        assert_eq!(code, 0);
        assert_eq!(out, format!("{good} is a valid identity\n"));
        let (code, _, err) = run_capture(IdtoolCommand::Validate {
            identity: bad.clone(),
        });
        assert_eq!(code, 1);
        assert_eq!(err, format!("{bad} FAILED validation.\n"));
        let (code, _, err) = run_capture(IdtoolCommand::Validate {
            identity: "/nonexistent/x".into(),
        });
        assert_eq!(code, 1);
        assert!(err.starts_with("Identity argument invalid or file unreadable"));
    }

    #[test]
    fn getpublic_strips_the_secret() {
        let (good, _) = selftest_identities();
        let (code, out, _) = run_capture(IdtoolCommand::Getpublic {
            identity: good.clone(),
        });
        assert_eq!(code, 0);
        let public: Vec<&str> = good.split(':').take(3).collect();
        assert_eq!(out, public.join(":"));
    }

    #[test]
    fn generate_writes_files_sign_and_verify_round_trip() {
        let dir = TempDir::new("idtool");
        let secret_path = dir.path().join("identity.secret");
        let public_path = dir.path().join("identity.public");
        let (code, out, _) = run_capture(IdtoolCommand::Generate {
            secret_path: Some(secret_path.clone()),
            public_path: Some(public_path.clone()),
            vanity: None,
        });
        assert_eq!(code, 0);
        assert_eq!(
            out,
            format!(
                "{} written\n{} written\n",
                secret_path.display(),
                public_path.display()
            )
        );
        let secret_arg = secret_path.to_string_lossy().to_string();
        let public_arg = public_path.to_string_lossy().to_string();
        let (code, _, _) = run_capture(IdtoolCommand::Validate {
            identity: secret_arg.clone(),
        });
        assert_eq!(code, 0);

        let message = dir.path().join("message");
        fs::write(&message, b"hello world").expect("write");
        let (code, signature, _) = run_capture(IdtoolCommand::Sign {
            identity: secret_arg,
            file: message.clone(),
        });
        assert_eq!(code, 0);
        assert_eq!(signature.len(), 192);

        let (code, out, _) = run_capture(IdtoolCommand::Verify {
            identity: public_arg.clone(),
            file: message.clone(),
            signature: signature.clone(),
        });
        assert_eq!(code, 0);
        assert_eq!(out, format!("{} signature valid\n", message.display()));

        // A signature file works as well as the hex itself.
        let signature_file = dir.path().join("message.sig");
        fs::write(&signature_file, &signature).expect("write");
        let (code, _, _) = run_capture(IdtoolCommand::Verify {
            identity: public_arg.clone(),
            file: message.clone(),
            signature: signature_file.to_string_lossy().to_string(),
        });
        assert_eq!(code, 0);

        fs::write(&message, b"hello world!").expect("write");
        let (code, _, err) = run_capture(IdtoolCommand::Verify {
            identity: public_arg.clone(),
            file: message.clone(),
            signature,
        });
        assert_eq!(code, 1);
        assert_eq!(
            err,
            format!("{} signature check FAILED\n", message.display())
        );

        // Signing needs the secret.
        let (code, _, err) = run_capture(IdtoolCommand::Sign {
            identity: public_arg.clone(),
            file: message,
        });
        assert_eq!(code, 1);
        assert!(err.contains("does not contain a private key"));
    }

    #[cfg(unix)]
    #[test]
    fn generated_secret_is_private_and_has_no_newline() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("idtool-mode");
        let secret_path = dir.path().join("identity.secret");
        let (code, _, _) = run_capture(IdtoolCommand::Generate {
            secret_path: Some(secret_path.clone()),
            public_path: None,
            vanity: None,
        });
        assert_eq!(code, 0);
        let meta = fs::metadata(&secret_path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&secret_path).expect("read");
        assert!(!text.ends_with('\n'));
        assert_eq!(text.split(':').count(), 4);
    }
}
