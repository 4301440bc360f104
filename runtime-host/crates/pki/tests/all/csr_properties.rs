//! Property tests ("fuzzing") of what weir-pki reads from a device: the CSR of a renewal
//! (`check_csr`, the check an edge host applies to `POST /v1/renew` before it queues the
//! request, and `renew`, which signs it) and the identity in a client certificate
//! (`identity_from_cert`). Whatever the text — random strings, PEM armour around random bytes,
//! a real CSR with bytes flipped, or a CSR the attacker built and signed with its own key,
//! with odd subjects, string types and requested extensions — `check_csr` accepts it or
//! refuses it as `invalid_csr` with a message free of internal text, never panics, refuses
//! anything over `MAX_CSR_LEN`, and whatever it accepts, `renew` signs: a certificate for the
//! CSR's own public key carrying the presented identity, nothing the CSR claims.
//!
//! Each property runs proptest's default 256 cases; `PROPTEST_CASES=100000` runs more (see
//! docs/FUZZING.md). A failure is saved to `tests/proptest-regressions/csr_properties.txt` and
//! replayed first on every later run.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use rcgen::{CertificateParams, KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use weir_pki::renew::MAX_CSR_LEN;
use weir_pki::{Ca, DeviceIdentity, RenewError, check_csr, identity_from_cert, renew};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

/// Text that gives away internals: Rust debug dumps, source paths, panics. A message may only
/// contain one when it quotes the input that did.
const LEAKS: &[&str] = &[
    "SQL",
    "Error {",
    "Error(",
    "Some(",
    "Der(",
    "Nom(",
    "Parsing Error",
    ".rs:",
    "src/",
    "/work/",
    "/home/",
    "registry/",
    "panicked",
];

/// The codes `identity_from_cert` refuses a certificate with.
const IDENTITY_CODES: &[&str] = &[
    "not_a_certificate",
    "missing_device",
    "missing_org",
    "invalid_identity",
];

/// The device every renewal here is for, as mutual TLS authenticated it.
fn presented() -> DeviceIdentity {
    DeviceIdentity {
        device: "meter-0042".into(),
        org: "acme".into(),
        serial_hex: "01".into(),
        not_after: 0,
    }
}

/// What the properties share: one CA, and the keys a device may sign its CSR with (generated
/// once: key generation would dominate each case).
struct Bench {
    ca: Ca,
    keys: Vec<(KeyPair, Vec<u8>)>,
    csr_der: Vec<u8>,
    cert_der: Vec<u8>,
}

fn bench() -> &'static Bench {
    static BENCH: OnceLock<Bench> = OnceLock::new();
    BENCH.get_or_init(|| {
        let ca = Ca::generate_in_memory("Weir Property CA").unwrap();
        // Each key with the DER AlgorithmIdentifier of the signature it makes.
        let keys = [
            (
                &rcgen::PKCS_ECDSA_P256_SHA256,
                oid(&[1, 2, 840, 10045, 4, 3, 2]),
            ),
            (
                &rcgen::PKCS_ECDSA_P384_SHA384,
                oid(&[1, 2, 840, 10045, 4, 3, 3]),
            ),
            (&rcgen::PKCS_ED25519, oid(&[1, 3, 101, 112])),
        ]
        .into_iter()
        .map(|(alg, alg_oid): (&'static SignatureAlgorithm, Vec<u8>)| {
            (KeyPair::generate_for(alg).unwrap(), tlv(0x30, &alg_oid))
        })
        .collect();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["meter-0042.example".to_owned()]).unwrap();
        let csr_der = params.serialize_request(&key).unwrap().der().to_vec();
        let now = weir_pki::ca::now();
        let issued = ca
            .issue_device_cert("meter-0042", "acme", now, now + time::Duration::days(1))
            .unwrap();
        let cert_der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
            .unwrap()
            .to_vec();
        Bench {
            ca,
            keys,
            csr_der,
            cert_der,
        }
    })
}

// ---- the checks every answer passes ----

fn assert_no_leak(message: &str, inputs: &[&[u8]]) -> Result<(), TestCaseError> {
    prop_assert!(!message.is_empty(), "an empty message");
    for leak in LEAKS {
        let quoted = inputs
            .iter()
            .any(|input| String::from_utf8_lossy(input).contains(leak));
        prop_assert!(
            quoted || !message.contains(leak),
            "message {message:?} contains {leak:?}"
        );
    }
    Ok(())
}

/// `check_csr(pem)` refuses with `invalid_csr` and a clean message, or accepts a CSR that
/// `renew` signs for the CSR's own key with the presented identity. `der` is what the PEM
/// wraps, when known (a message may quote the subject inside it).
fn check(pem: &str, der: &[u8]) -> Result<(), TestCaseError> {
    let outcome = check_csr(pem);
    if pem.len() > MAX_CSR_LEN {
        prop_assert!(outcome.is_err(), "a CSR over MAX_CSR_LEN was accepted");
    }
    match outcome {
        Err(error) => {
            prop_assert!(matches!(error, RenewError::InvalidCsr(_)), "{error:?}");
            prop_assert_eq!(error.code(), "invalid_csr");
            assert_no_leak(&error.to_string(), &[pem.as_bytes(), der])
        }
        Ok(()) => check_renewed(pem),
    }
}

/// What `renew` makes of a CSR `check_csr` accepted: a certificate for the CSR's public key
/// (the same SubjectPublicKeyInfo), with the presented identity.
fn check_renewed(pem: &str) -> Result<(), TestCaseError> {
    let signed = renew(&bench().ca, &presented(), pem, 7);
    let signed = match signed {
        Ok(signed) => signed,
        Err(error) => {
            return Err(TestCaseError::fail(format!(
                "check_csr accepted a CSR that renew refuses: {error}"
            )));
        }
    };
    let cert = CertificateDer::from_pem_slice(signed.cert_pem.as_bytes()).unwrap();
    let identity = identity_from_cert(&cert).unwrap();
    prop_assert_eq!(
        (identity.device.as_str(), identity.org.as_str()),
        ("meter-0042", "acme")
    );
    // rcgen's PEM reader may be laxer than rustls' (labels, whitespace): compare nothing then.
    let Ok(csr_der) = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()) else {
        return Ok(());
    };
    let Ok((_, csr)) = X509CertificationRequest::from_der(csr_der.as_ref()) else {
        return Ok(());
    };
    let csr_spki = csr.certification_request_info.subject_pki.raw;
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    prop_assert_eq!(
        parsed.public_key().raw,
        csr_spki,
        "the certificate is not for the CSR's key"
    );
    Ok(())
}

// ---- DER and PEM, written by hand so that anything can be written ----

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut push = |mut arc: u64| {
        let mut groups = vec![(arc & 0x7f) as u8];
        arc >>= 7;
        while arc > 0 {
            groups.push(0x80 | (arc & 0x7f) as u8);
            arc >>= 7;
        }
        body.extend(groups.into_iter().rev());
    };
    push(arcs[0] * 40 + arcs[1]);
    for arc in &arcs[2..] {
        push(*arc);
    }
    tlv(0x06, &body)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

// ---- strategies ----

/// PEM armour, right or wrong, around random bytes.
fn armoured_garbage() -> impl Strategy<Value = (String, Vec<u8>)> {
    let label = prop::sample::select(
        &[
            "CERTIFICATE REQUEST",
            "NEW CERTIFICATE REQUEST",
            "CERTIFICATE",
            "PRIVATE KEY",
            "",
            "CERTIFICATE REQUEST\0",
        ][..],
    );
    let shape = prop::sample::select(&["lf", "crlf", "one line", "no end", "header", "junk"][..]);
    (label, shape, prop::collection::vec(any::<u8>(), 0..600)).prop_map(|(label, shape, der)| {
        let armoured = pem(label, &der);
        let text = match shape {
            "crlf" => armoured.replace('\n', "\r\n"),
            "one line" => {
                format!(
                    "-----BEGIN {label}-----{}-----END {label}-----",
                    base64(&der)
                )
            }
            "no end" => armoured.lines().next().unwrap_or_default().to_owned(),
            "header" => armoured.replacen(
                "-----\n",
                "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
                1,
            ),
            "junk" => format!("\u{feff}junk\n{armoured}\0trailing"),
            _ => armoured,
        };
        (text, der)
    })
}

/// Edits applied to a valid DER structure.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(at, xor)| Edit::Flip(at, xor)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        1 => any::<Index>().prop_map(Edit::Delete),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..4)
}

fn apply(mut der: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        if der.is_empty() {
            break;
        }
        match edit {
            Edit::Flip(at, xor) => {
                let at = at.index(der.len());
                der[at] ^= xor;
            }
            Edit::Insert(at, byte) => der.insert(at.index(der.len() + 1), *byte),
            Edit::Delete(at) => {
                der.remove(at.index(der.len()));
            }
            Edit::Truncate(at) => der.truncate(at.index(der.len())),
        }
    }
    der
}

/// An attribute value of a subject: a string type (or not) with any bytes in it.
fn attribute_value() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop::sample::select(
        &[
            0x0c, // UTF8String
            0x13, // PrintableString
            0x16, // IA5String
            0x14, // TeletexString
            0x1e, // BMPString
            0x1c, // UniversalString
            0x04, // OCTET STRING
            0x02, // INTEGER
            0x30, // SEQUENCE
        ][..],
    );
    let content = prop_oneof![
        3 => "[ -~]{0,24}".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..24),
        1 => any::<String>().prop_map(String::into_bytes),
    ];
    (tag, content).prop_map(|(tag, content)| tlv(tag, &content))
}

fn attribute_type() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(&[3u64, 10, 11, 6, 5, 46][..]).prop_map(|arc| oid(&[2, 5, 4, arc])),
        1 => prop::collection::vec(any::<u32>(), 0..4).prop_map(|tail| {
            let mut arcs = vec![1u64, 3];
            arcs.extend(tail.into_iter().map(u64::from));
            oid(&arcs)
        }),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(|body| tlv(0x06, &body)),
    ]
}

/// A subject: RDNs of one to three attributes, any types and values.
fn subject() -> impl Strategy<Value = Vec<u8>> {
    let attribute = (attribute_type(), attribute_value())
        .prop_map(|(kind, value)| tlv(0x30, &[kind, value].concat()));
    let rdn = prop::collection::vec(attribute, 0..3).prop_map(|attrs| tlv(0x31, &attrs.concat()));
    prop::collection::vec(rdn, 0..6).prop_map(|rdns| tlv(0x30, &rdns.concat()))
}

/// A requested extension: the ones rcgen reads (SAN, key usage, extended key usage, basic
/// constraints) with well-formed or random values, and others.
fn extension() -> impl Strategy<Value = Vec<u8>> {
    let general_name = prop_oneof![
        "[a-z.]{0,12}".prop_map(|s| tlv(0x82, s.as_bytes())),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|ip| tlv(0x87, &ip)),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|s| tlv(0x81, &s)),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|s| tlv(0x86, &s)),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|s| tlv(0xa0, &s)),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..12)).prop_map(|(t, s)| tlv(t, &s)),
    ];
    let san = prop::collection::vec(general_name, 0..4)
        .prop_map(|names| (oid(&[2, 5, 29, 17]), tlv(0x30, &names.concat())));
    let key_usage = (any::<u8>(), any::<u8>())
        .prop_map(|(unused, bits)| (oid(&[2, 5, 29, 15]), tlv(0x03, &[unused % 8, bits])));
    let eku = prop::collection::vec(
        prop_oneof![
            (1u64..=9).prop_map(|n| oid(&[1, 3, 6, 1, 5, 5, 7, 3, n])),
            Just(oid(&[2, 5, 29, 37, 0])),
            any::<u32>().prop_map(|n| oid(&[1, 2, u64::from(n)])),
        ],
        0..4,
    )
    .prop_map(|purposes| (oid(&[2, 5, 29, 37]), tlv(0x30, &purposes.concat())));
    let basic_constraints =
        (any::<bool>(), prop::option::of(any::<u32>())).prop_map(|(ca, len)| {
            let mut content = Vec::new();
            if ca {
                content.extend(tlv(0x01, &[0xff]));
            }
            if let Some(len) = len {
                let bytes = len.to_be_bytes();
                let start = bytes.iter().position(|b| *b != 0).unwrap_or(3);
                let mut int = bytes[start..].to_vec();
                if int[0] & 0x80 != 0 {
                    int.insert(0, 0);
                }
                content.extend(tlv(0x02, &int));
            }
            (oid(&[2, 5, 29, 19]), tlv(0x30, &content))
        });
    let other = (
        prop::sample::select(&[14u64, 30, 31, 32, 35][..]),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(arc, value)| (oid(&[2, 5, 29, arc]), value));
    let garbled = (
        prop::sample::select(&[15u64, 17, 19, 37][..]),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(arc, value)| (oid(&[2, 5, 29, arc]), value));
    (
        prop_oneof![san, key_usage, eku, basic_constraints, other, garbled],
        any::<bool>(),
    )
        .prop_map(|((id, value), critical)| {
            let mut content = id;
            if critical {
                content.extend(tlv(0x01, &[0xff]));
            }
            content.extend(tlv(0x04, &value));
            tlv(0x30, &content)
        })
}

/// The CSR's attributes (`[0]`): an extension request, a challenge password, or nothing.
fn attributes() -> impl Strategy<Value = Vec<u8>> {
    let extension_request = prop::collection::vec(extension(), 0..4).prop_map(|extensions| {
        let set = tlv(0x31, &tlv(0x30, &extensions.concat()));
        tlv(0x30, &[oid(&[1, 2, 840, 113549, 1, 9, 14]), set].concat())
    });
    let challenge = attribute_value().prop_map(|value| {
        tlv(
            0x30,
            &[oid(&[1, 2, 840, 113549, 1, 9, 7]), tlv(0x31, &value)].concat(),
        )
    });
    prop::collection::vec(prop_oneof![3 => extension_request, 1 => challenge], 0..3)
        .prop_map(|attrs| tlv(0xa0, &attrs.concat()))
}

/// How the signed request is put together, apart from its subject and attributes.
#[derive(Debug, Clone)]
struct Signing {
    /// Which of the bench's keys signs.
    key: Index,
    /// The SubjectPublicKeyInfo announced: the signing key's, or another key's.
    spki_of: Option<Index>,
    /// The signature algorithm announced: the key's, or another key's.
    alg_of: Option<Index>,
    /// The CSR version (v1 is 0).
    version: u8,
}

fn signing() -> impl Strategy<Value = Signing> {
    (
        any::<Index>(),
        prop::option::weighted(0.1, any::<Index>()),
        prop::option::weighted(0.1, any::<Index>()),
        prop_oneof![8 => Just(0u8), 1 => any::<u8>()],
    )
        .prop_map(|(key, spki_of, alg_of, version)| Signing {
            key,
            spki_of,
            alg_of,
            version,
        })
}

/// A CSR built and signed by the requester: the subject, attributes and algorithms it chose,
/// with a valid signature by one of the bench's keys. As PEM and as DER.
fn signed_request() -> impl Strategy<Value = (String, Vec<u8>)> {
    (subject(), attributes(), signing()).prop_map(|(subject, attributes, signing)| {
        let keys = &bench().keys;
        let (key, alg) = &keys[signing.key.index(keys.len())];
        let spki = match &signing.spki_of {
            Some(other) => keys[other.index(keys.len())].0.subject_public_key_info(),
            None => key.subject_public_key_info(),
        };
        let alg = match &signing.alg_of {
            Some(other) => &keys[other.index(keys.len())].1,
            None => alg,
        };
        let info = tlv(
            0x30,
            &[tlv(0x02, &[signing.version]), subject, spki, attributes].concat(),
        );
        let signature = key.sign(&info).unwrap();
        let bits = tlv(0x03, &[&[0u8][..], &signature].concat());
        let der = tlv(0x30, &[info, alg.clone(), bits].concat());
        (pem("CERTIFICATE REQUEST", &der), der)
    })
}

// ---- the properties ----

proptest! {
    #[test]
    fn any_text_is_a_csr_or_invalid_csr(text in any::<String>()) {
        check(&text, b"")?;
    }

    #[test]
    fn armoured_garbage_is_a_csr_or_invalid_csr((text, der) in armoured_garbage()) {
        check(&text, &der)?;
    }

    #[test]
    fn an_edited_csr_is_refused_or_renewed_for_its_own_key(edits in edits()) {
        let der = apply(bench().csr_der.clone(), &edits);
        check(&pem("CERTIFICATE REQUEST", &der), &der)?;
    }

    #[test]
    fn a_requester_built_csr_is_refused_or_renewed_with_the_presented_identity(
        (text, der) in signed_request(),
    ) {
        check(&text, &der)?;
    }

    #[test]
    fn a_csr_over_max_csr_len_is_refused_and_one_within_is_not(padding in 0usize..2 * MAX_CSR_LEN) {
        let csr = pem("CERTIFICATE REQUEST", &bench().csr_der);
        let padded = format!("{csr}{}", "\n".repeat(padding));
        let outcome = check_csr(&padded);
        if padded.len() > MAX_CSR_LEN {
            let error = outcome.unwrap_err();
            prop_assert_eq!(error.code(), "invalid_csr");
            prop_assert!(error.to_string().contains("larger than"), "{error}");
        } else {
            prop_assert!(outcome.is_ok(), "{outcome:?}");
        }
    }

    #[test]
    fn any_bytes_are_an_identity_or_a_known_error(
        der in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        check_identity(&der)?;
    }

    #[test]
    fn an_edited_certificate_is_an_identity_or_a_known_error(edits in edits()) {
        check_identity(&apply(bench().cert_der.clone(), &edits))?;
    }
}

/// `identity_from_cert` refuses with a known code or gives a valid device id and
/// organisation. (Its messages are logged, never sent: only the codes are checked.)
fn check_identity(der: &[u8]) -> Result<(), TestCaseError> {
    match identity_from_cert(der) {
        Err(error) => prop_assert!(IDENTITY_CODES.contains(&error.code()), "{error:?}"),
        Ok(identity) => {
            for name in [&identity.device, &identity.org] {
                prop_assert!((1..=64).contains(&name.len()), "{identity:?}");
                prop_assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                    "{identity:?}"
                );
            }
        }
    }
    Ok(())
}
