//! Operator signatures on components: Ed25519, carried inside the component as its last custom
//! section, `weir-signature`, so a signed component is still one file that any WebAssembly tool
//! (and wasmtime) reads as before, and its registry digest covers the signature.
//!
//! The signature is over `MESSAGE_PREFIX || SHA-256(the component without its signature
//! section)`. Signing a signed component replaces its signature. Keys: the operator's private
//! key is a PKCS#8 PEM file (`weir functions keygen`), the public key the hosts are configured
//! with is its 32 raw bytes in hex (`functions.signing_public_key`).

use rcgen::{KeyPair, PKCS_ED25519, SigningKey as _};
use sha2::{Digest, Sha256};

/// The custom section holding the signature.
pub const SECTION: &str = "weir-signature";
/// What the signed digest is prefixed with, so a Weir signature means nothing elsewhere.
const MESSAGE_PREFIX: &[u8] = b"weir component signature v1\0";
/// Section id of custom sections in modules and components alike.
const CUSTOM_SECTION_ID: u8 = 0;

/// Why a component's signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The component carries no `weir-signature` section (it must be the last section).
    #[error("the component is not signed (no trailing `{SECTION}` section)")]
    Unsigned,
    /// The signature does not verify with the configured public key.
    #[error("the component's signature does not match the configured public key")]
    Mismatch,
    /// The bytes are not a WebAssembly binary whose sections can be read.
    #[error("not a readable WebAssembly binary: {0}")]
    Malformed(&'static str),
}

/// The operator's public key, which hosts verify components with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses the key's 64 hex digits.
    pub fn from_hex(text: &str) -> anyhow::Result<PublicKey> {
        let bytes = hex::decode(text.trim()).map_err(|e| {
            anyhow::anyhow!("the signing public key is not hex ({e}): expected 64 hex digits")
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            anyhow::anyhow!(
                "the signing public key has {} bytes; an Ed25519 key has 32 (64 hex digits)",
                bytes.len()
            )
        })?;
        Ok(PublicKey(bytes))
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Checks that `component` is signed with this key's private half.
    pub fn verify(&self, component: &[u8]) -> Result<(), SignatureError> {
        let (signed, signature) = split(component)?;
        let signature = signature.ok_or(SignatureError::Unsigned)?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(&message(signed), signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// The operator's private key.
pub struct PrivateKey(KeyPair);

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> anyhow::Result<PrivateKey> {
        Ok(PrivateKey(KeyPair::generate_for(&PKCS_ED25519)?))
    }

    /// Reads a PKCS#8 PEM Ed25519 key.
    pub fn from_pem(pem: &str) -> anyhow::Result<PrivateKey> {
        let pair = KeyPair::from_pem(pem)
            .map_err(|e| anyhow::anyhow!("not a PKCS#8 PEM private key: {e}"))?;
        anyhow::ensure!(
            pair.algorithm() == &PKCS_ED25519,
            "the private key is not an Ed25519 key"
        );
        Ok(PrivateKey(pair))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.0.serialize_pem()
    }

    /// The public half, which hosts are configured with.
    pub fn public_key(&self) -> PublicKey {
        let raw: [u8; 32] = self
            .0
            .public_key_raw()
            .try_into()
            .expect("an Ed25519 public key has 32 bytes");
        PublicKey(raw)
    }

    /// `component` with its signature section (replacing any earlier signature).
    pub fn sign(&self, component: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (unsigned, _) = split(component)?;
        let signature = self.0.sign(&message(unsigned))?;
        let mut payload = Vec::with_capacity(1 + SECTION.len() + signature.len());
        leb128(&mut payload, SECTION.len());
        payload.extend_from_slice(SECTION.as_bytes());
        payload.extend_from_slice(&signature);
        let mut signed = unsigned.to_vec();
        signed.push(CUSTOM_SECTION_ID);
        leb128(&mut signed, payload.len());
        signed.extend_from_slice(&payload);
        Ok(signed)
    }
}

/// What is signed: the prefix and the SHA-256 of the unsigned component.
fn message(unsigned: &[u8]) -> Vec<u8> {
    let mut message = MESSAGE_PREFIX.to_vec();
    message.extend_from_slice(&Sha256::digest(unsigned));
    message
}

/// Splits `binary` into the part before its signature section and the signature, if its last
/// section is one.
fn split(binary: &[u8]) -> Result<(&[u8], Option<&[u8]>), SignatureError> {
    if binary.len() < 8 || &binary[..4] != b"\0asm" {
        return Err(SignatureError::Malformed("no WebAssembly header"));
    }
    let mut at = 8;
    let mut last: Option<(usize, Option<&[u8]>)> = None;
    while at < binary.len() {
        let start = at;
        let id = binary[at];
        let (size, after_size) = read_leb128(binary, at + 1)?;
        let end = after_size
            .checked_add(size)
            .filter(|&end| end <= binary.len())
            .ok_or(SignatureError::Malformed("a section runs past the end"))?;
        let signature = if id == CUSTOM_SECTION_ID {
            let (name_len, name_at) = read_leb128(binary, after_size)?;
            let name_end = name_at.checked_add(name_len).filter(|&e| e <= end).ok_or(
                SignatureError::Malformed("a custom section name runs past it"),
            )?;
            (&binary[name_at..name_end] == SECTION.as_bytes()).then(|| &binary[name_end..end])
        } else {
            None
        };
        last = Some((start, signature));
        at = end;
    }
    Ok(match last {
        Some((start, Some(signature))) => (&binary[..start], Some(signature)),
        _ => (binary, None),
    })
}

/// Reads an unsigned LEB128 number at `at`: its value and the offset after it.
fn read_leb128(bytes: &[u8], mut at: usize) -> Result<(usize, usize), SignatureError> {
    let mut value: usize = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at).ok_or(SignatureError::Malformed(
            "a section size runs past the end",
        ))?;
        at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value, at));
        }
    }
    Err(SignatureError::Malformed("a section size is too long"))
}

/// Appends `value` as unsigned LEB128.
fn leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with one custom section: the smallest binary with sections.
    fn module() -> Vec<u8> {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.extend_from_slice(&[0, 5, 4, b'n', b'o', b't', b'e']);
        bytes
    }

    #[test]
    fn a_signed_binary_verifies_with_its_key_only() {
        let key = PrivateKey::generate().unwrap();
        let other = PrivateKey::generate().unwrap();
        let signed = key.sign(&module()).unwrap();
        assert!(signed.starts_with(&module()));
        assert_eq!(key.public_key().verify(&signed), Ok(()));
        assert_eq!(
            other.public_key().verify(&signed),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            key.public_key().verify(&module()),
            Err(SignatureError::Unsigned)
        );
    }

    #[test]
    fn any_change_to_the_signed_bytes_breaks_the_signature() {
        let key = PrivateKey::generate().unwrap();
        let mut signed = key.sign(&module()).unwrap();
        signed[12] ^= 1; // a letter of the first section's name
        assert_eq!(
            key.public_key().verify(&signed),
            Err(SignatureError::Mismatch)
        );
        // Bytes appended after the signature hide it: the signature must come last.
        let mut appended = key.sign(&module()).unwrap();
        appended.extend_from_slice(&[0, 2, 1, b'x']);
        assert_eq!(
            key.public_key().verify(&appended),
            Err(SignatureError::Unsigned)
        );
    }

    #[test]
    fn signing_again_replaces_the_signature() {
        let first = PrivateKey::generate().unwrap();
        let second = PrivateKey::generate().unwrap();
        let twice = second.sign(&first.sign(&module()).unwrap()).unwrap();
        assert_eq!(twice.len(), first.sign(&module()).unwrap().len());
        assert_eq!(second.public_key().verify(&twice), Ok(()));
        assert_eq!(
            first.public_key().verify(&twice),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let key = PrivateKey::generate().unwrap();
        let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = PublicKey::from_hex(&key.public_key().to_hex()).unwrap();
        assert_eq!(public, key.public_key());
        assert!(PublicKey::from_hex("abcd").is_err());
        assert!(PublicKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn garbage_is_malformed_not_unsigned() {
        let key = PrivateKey::generate().unwrap();
        assert!(matches!(
            key.public_key().verify(b"not wasm"),
            Err(SignatureError::Malformed(_))
        ));
        let mut truncated = module();
        truncated[9] = 50;
        assert!(matches!(
            key.public_key().verify(&truncated),
            Err(SignatureError::Malformed(_))
        ));
    }
}
