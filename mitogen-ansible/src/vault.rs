//! Ansible Vault: `$ANSIBLE_VAULT;1.1;AES256` and `;1.2;AES256;<id>`
//! data decrypted exactly as ansible-core's `VaultLib`/`VaultAES256`:
//!
//! ```text
//!  $ANSIBLE_VAULT;1.2;AES256;prod          header (1.2: the vault id)
//!  3036...                                 hex of "hex(salt)\nhex(hmac)\nhex(ciphertext)", in lines
//!
//!  key1 | key2 | iv = PBKDF2-HMAC-SHA256(password, salt, 10000 rounds, 32 + 32 + 16 bytes)
//!  HMAC-SHA256(key2, ciphertext) == hmac (constant time), then
//!  plaintext = unpad_pkcs7(AES-256-CTR(key1, iv) ciphertext)
//! ```
//!
//! Secrets come from password files or, for an executable file, from its
//! output (`--vault-password-file`, `--vault-id [id@]FILE`,
//! `ANSIBLE_VAULT_PASSWORD_FILE`); a vault id in the data picks its
//! secret first, then every other one is tried, as ansible-core does
//! (`DEFAULT_VAULT_ID_MATCH` off). The secrets of a run are set once with
//! [`set_secrets`]: vars files, inline `!vault` values, `copy src=` and the
//! `file`/`unvault` lookups all decrypt with them. Errors carry
//! ansible-core's texts.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use std::sync::RwLock;

/// The header every vault starts with.
const HEADER: &[u8] = b"$ANSIBLE_VAULT";

/// A vault failure, with ansible-core's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VaultError(pub String);

fn err(msg: impl Into<String>) -> VaultError {
    VaultError(msg.into())
}

/// A vault password and its vault id (`default` without one).
#[derive(Clone)]
pub struct Secret {
    id: String,
    password: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// A secret from a password.
    pub fn new(id: &str, password: &[u8]) -> Self {
        Self {
            id: id.to_owned(),
            password: password.to_vec(),
        }
    }

    /// Its vault id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `--vault-id` / `--vault-password-file`: `[id@]FILE`, the file's
    /// content (stripped) or, for an executable file, its output.
    ///
    /// # Errors
    /// A missing or unreadable file, a failing script, an empty password,
    /// with ansible-core's messages.
    pub fn from_spec(spec: &str) -> Result<Self, VaultError> {
        let (id, file) = match spec.split_once('@') {
            Some(("", f)) => ("default", f),
            Some((id, f)) => (id, f),
            None => ("default", spec),
        };
        Self::from_file(id, Path::new(file))
    }

    /// A password file (or script) for vault id `id`.
    ///
    /// # Errors
    /// As [`Secret::from_spec`].
    pub fn from_file(id: &str, path: &Path) -> Result<Self, VaultError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|_| err(format!("The vault password file {shown} was not found")))?;
        if meta.is_dir() {
            return Err(err(format!(
                "The vault password file provided '{shown}' can not be a directory"
            )));
        }
        let password = if meta.permissions().mode() & 0o111 != 0 {
            let out = std::process::Command::new(path)
                .stdin(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::piped())
                .output()
                .map_err(|e| {
                    err(format!(
                        "Problem running vault password script {shown} ({e}). If this is not a script, remove the executable bit from the file."
                    ))
                })?;
            if !out.status.success() {
                return Err(err(format!(
                    "Vault password script {shown} returned non-zero ({}): {}",
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            let p = trim_newlines(&out.stdout).to_vec();
            if p.is_empty() {
                return Err(err(format!(
                    "Invalid vault password was provided from script ({shown})"
                )));
            }
            p
        } else {
            let data = std::fs::read(path)
                .map_err(|_| err(format!("Could not read vault password file '{shown}'.")))?;
            let p = trim_newlines(data.trim_ascii()).to_vec();
            if p.is_empty() {
                return Err(err(format!(
                    "Invalid vault password was provided from file ({shown})"
                )));
            }
            p
        };
        Ok(Self {
            id: id.to_owned(),
            password,
        })
    }
}

fn trim_newlines(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b'\r' | b'\n'));
    let end = b.iter().rposition(|c| !matches!(c, b'\r' | b'\n'));
    match (start, end) {
        (Some(s), Some(e)) => &b[s..=e],
        _ => &[],
    }
}

static SECRETS: RwLock<Vec<Secret>> = RwLock::new(Vec::new());

/// Sets the vault secrets of this process's run (the CLI does, from its
/// `--vault-*` options).
pub fn set_secrets(secrets: Vec<Secret>) {
    if let Ok(mut s) = SECRETS.write() {
        *s = secrets;
    }
}

/// Whether `data` is vault data (starts with `$ANSIBLE_VAULT`, ASCII).
pub fn is_encrypted(data: &[u8]) -> bool {
    data.is_ascii() && data.starts_with(HEADER)
}

/// Whether the file at `p` starts as vault data.
pub fn is_encrypted_file(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; HEADER.len()];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| is_encrypted(&head))
}

/// What an inline `!vault` value no secret decrypts becomes: this marker,
/// then the error. Reading the variable fails with the error (as
/// ansible-core's undecryptable values fail only when used).
pub const UNDECRYPTABLE: &str = "\u{1}mitogen-undecryptable-vault\u{1}";

/// The decryption error an inline vault value carries, if it is one.
pub fn undecryptable(v: &str) -> Option<&str> {
    v.strip_prefix(UNDECRYPTABLE)
}

/// Set once any inline value could not be decrypted: only then do
/// variable reads look inside containers for one ([`undecryptable_in`]).
static ANY_UNDECRYPTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `v` as an undecryptable inline value, noted for [`undecryptable_in`].
pub(crate) fn mark_undecryptable(e: &dyn std::fmt::Display) -> String {
    ANY_UNDECRYPTABLE.store(true, std::sync::atomic::Ordering::Relaxed);
    format!("{UNDECRYPTABLE}{e}")
}

/// The error of the first undecryptable value inside `v` (a list or dict
/// holding one fails when read, as in ansible-core).
pub fn undecryptable_in(v: &serde_json::Value) -> Option<&str> {
    if !ANY_UNDECRYPTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    match v {
        serde_json::Value::String(s) => undecryptable(s),
        serde_json::Value::Array(a) => a.iter().find_map(undecryptable_in),
        serde_json::Value::Object(o) => o.values().find_map(undecryptable_in),
        _ => None,
    }
}

/// Decrypts `data` with the secrets [`set_secrets`] set.
///
/// # Errors
/// As [`decrypt_with`].
pub fn decrypt(data: &[u8]) -> Result<Vec<u8>, VaultError> {
    let secrets = SECRETS.read().map(|s| s.clone()).unwrap_or_default();
    decrypt_with(data, &secrets)
}

/// `data` as it is, or decrypted if it is vault data.
///
/// # Errors
/// As [`decrypt_with`].
pub fn decrypt_if_vault(data: Vec<u8>) -> Result<Vec<u8>, VaultError> {
    if is_encrypted(&data) {
        decrypt(&data)
    } else {
        Ok(data)
    }
}

/// Decrypts vault `data` with `secrets`: those for the data's vault id
/// first, then the others.
///
/// # Errors
/// Not vault data, an unknown cipher, no secrets, a malformed envelope,
/// or no secret that decrypts it: ansible-core's messages.
pub fn decrypt_with(data: &[u8], secrets: &[Secret]) -> Result<Vec<u8>, VaultError> {
    if !is_encrypted(data) {
        return Err(err("Input is not vault encrypted data."));
    }
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let header = lines.next().unwrap_or_default().trim_ascii();
    let fields: Vec<&[u8]> = header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .collect();
    if fields.len() < 3 {
        return Err(err("Vault envelope format error."));
    }
    let cipher = String::from_utf8_lossy(fields[2]);
    let vault_id = fields
        .get(3)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let body: Vec<u8> = lines.flatten().copied().collect();
    if cipher != "AES256" {
        return Err(err(format!("Cipher '{cipher}' could not be found.")));
    }
    if secrets.is_empty() {
        return Err(err("Attempting to decrypt but no vault secrets found."));
    }
    let vt = parse_vaulttext(&body)?;
    let ordered = secrets
        .iter()
        .filter(|s| Some(&s.id) == vault_id.as_ref())
        .chain(secrets.iter().filter(|s| Some(&s.id) != vault_id.as_ref()));
    for s in ordered {
        if let Some(plain) = aes256_decrypt(&vt, &s.password)? {
            return Ok(plain);
        }
    }
    Err(err(
        "Decryption failed (no vault secrets were found that could decrypt).",
    ))
}

fn unhexlify(b: &[u8]) -> Result<Vec<u8>, VaultError> {
    let bad = || err("Vault format unhexlify error.");
    if b.len() % 2 != 0 {
        return Err(bad());
    }
    b.chunks(2)
        .map(|p| {
            let h = |c: u8| (c as char).to_digit(16).ok_or_else(bad);
            Ok((h(p[0])? * 16 + h(p[1])?) as u8)
        })
        .collect()
}

/// A vault's payload: what `parse_vaulttext` splits.
struct Vaulttext {
    ciphertext: Vec<u8>,
    salt: Vec<u8>,
    /// The HMAC (unhexlified).
    mac: Vec<u8>,
}

/// `parse_vaulttext`.
fn parse_vaulttext(body: &[u8]) -> Result<Vaulttext, VaultError> {
    let inner = unhexlify(body)?;
    let mut parts = inner.splitn(3, |&b| b == b'\n');
    let (Some(salt), Some(mac), Some(ct)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err("Vault vaulttext format error."));
    };
    Ok(Vaulttext {
        ciphertext: unhexlify(ct)?,
        salt: unhexlify(salt)?,
        mac: unhexlify(mac)?,
    })
}

/// `VaultAES256.decrypt` with one password: `None` if its HMAC does not
/// match (another secret may).
fn aes256_decrypt(vt: &Vaulttext, password: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let (ciphertext, salt, mac) = (&vt.ciphertext, &vt.salt, &vt.mac);
    let mut derived = [0u8; 80];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, 10_000, &mut derived);
    let (key1, rest) = derived.split_at(32);
    let (key2, iv) = rest.split_at(32);
    let mut h = <Hmac<Sha256> as Mac>::new_from_slice(key2)
        .map_err(|_| err("HMAC verification failed: invalid key"))?;
    h.update(ciphertext);
    // `verify_slice` compares in constant time.
    if h.verify_slice(mac).is_err() {
        return Ok(None);
    }
    let mut buf = ciphertext.to_vec();
    let mut c = ctr::Ctr128BE::<aes::Aes256>::new(key1.into(), iv.into());
    c.apply_keystream(&mut buf);
    // PKCS#7, 128-bit blocks.
    let pad = buf.last().copied().unwrap_or(0) as usize;
    if pad == 0
        || pad > 16
        || pad > buf.len()
        || !buf[buf.len() - pad..].iter().all(|&b| b as usize == pad)
    {
        return Err(err("Invalid padding bytes."));
    }
    buf.truncate(buf.len() - pad);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by ansible-core 2.19's `ansible-vault encrypt_string` with the
    /// password `pw`: `hello`.
    const HELLO: &str = "$ANSIBLE_VAULT;1.1;AES256
33393462383436343334373731616132316539313061356265656439643139656434396530323966
3463616231663965316161353537636531303264376235350a386439663832393763303039313931
37383232376364646362653735623864303935306663663035366364643562386332373665643032
6435363832393731660a663438333437396339663764313965356134643737346165643765663063
3538
";

    #[test]
    fn decrypts_as_ansible_core() {
        let s = [Secret::new("default", b"pw")];
        assert_eq!(decrypt_with(HELLO.as_bytes(), &s).unwrap(), b"hello");
        let wrong = [Secret::new("default", b"nope")];
        assert_eq!(
            decrypt_with(HELLO.as_bytes(), &wrong).unwrap_err().0,
            "Decryption failed (no vault secrets were found that could decrypt)."
        );
        // The id in a 1.2 header picks its secret first; others still work.
        let two = [Secret::new("a", b"nope"), Secret::new("b", b"pw")];
        let v12 = HELLO.replacen("1.1;AES256", "1.2;AES256;b", 1);
        assert_eq!(decrypt_with(v12.as_bytes(), &two).unwrap(), b"hello");
        assert_eq!(
            decrypt_with(HELLO.as_bytes(), &[]).unwrap_err().0,
            "Attempting to decrypt but no vault secrets found."
        );
        assert!(decrypt_with(b"plain", &s).is_err());
        let mut tampered = HELLO.as_bytes().to_vec();
        let n = tampered.len() - 3;
        tampered[n] = if tampered[n] == b'3' { b'4' } else { b'3' };
        assert!(decrypt_with(&tampered, &s).is_err());
    }
}
