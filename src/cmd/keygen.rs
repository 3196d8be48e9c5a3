//! `swarmfs keygen KEY`: an Ed25519 key pair for signing releases (`publish --sign KEY`,
//! `mount --trust KEY.pub`); and reading key files for the other subcommands.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::release::{PublicKey, SecretKey};

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (mode 0600; never overwritten); the public key goes
    /// to the same path with `.pub` added. Keep the secret key on the build machine only;
    /// hand the public key (or the hex line this prints) to every host's `mount --trust`.
    pub key: PathBuf,
}

pub fn run(args: KeygenArgs) -> Result<()> {
    let pub_path = public_path(&args.key);
    for p in [&args.key, &pub_path] {
        if p.symlink_metadata().is_ok() {
            bail!(
                "{} already exists: keygen never overwrites a key; choose another path",
                p.display()
            );
        }
    }
    let mut seed = [0u8; 32];
    // SAFETY: getrandom writes at most seed.len() bytes into the buffer we own.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        bail!(
            "cannot read 32 random bytes from the kernel: {}",
            std::io::Error::last_os_error()
        );
    }
    let key = SecretKey::from_seed(seed);
    let write = |path: &Path, text: &str, mode: u32| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write(&args.key, &key.to_text(), 0o600)?;
    write(&pub_path, &key.public().to_text(), 0o644)?;
    println!("{}", key.public());
    eprintln!(
        "secret key {} (keep it private), public key {}",
        args.key.display(),
        pub_path.display()
    );
    Ok(())
}

/// `KEY.pub`.
fn public_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// A secret key file, as `keygen` wrote it.
pub fn read_secret(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    SecretKey::parse(&text).with_context(|| {
        format!(
            "{} is not a swarmfs secret key (a line `swarmfs-ed25519-secret <64 hex>`, as \
             `swarmfs keygen` writes; give the secret key, not the .pub)",
            path.display()
        )
    })
}

/// `--trust`: a public key file (as `keygen` wrote it) or the key's 64 hex digits.
pub fn parse_trusted(arg: &str) -> Result<PublicKey, String> {
    if let Some(k) = PublicKey::parse(arg) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(arg).map_err(|e| {
        format!("{arg:?} is neither a public key (64 hex digits) nor a readable key file: {e}")
    })?;
    PublicKey::parse(&text).ok_or_else(|| {
        format!(
            "{arg} is not a swarmfs public key (a line `swarmfs-ed25519 <64 hex>`, as \
             `swarmfs keygen` writes to KEY.pub)"
        )
    })
}
