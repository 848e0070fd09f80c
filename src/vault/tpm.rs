//! The TPM 2.0 backend: the device key is a sealed data object under the owner hierarchy's
//! storage root key, with a policy that lets it be unsealed only while chosen PCRs (SHA-256
//! bank) hold the values they held when it was sealed. The storage root key is an ECC P-256
//! primary made from the standard template each time (the same TPM makes the same key), so
//! nothing has to be made persistent in the TPM. Through `tss-esapi` over the system's
//! tpm2-tss libraries; the TCTI string picks the TPM (`device:/dev/tpmrm0`, or a software TPM:
//! `swtpm:host=127.0.0.1,port=2321`).

use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::PolicySession;
use tss_esapi::structures::{
    Digest, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private,
    Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use zeroize::Zeroizing;

use super::VaultError;

/// The TCTI of the kernel's TPM resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// A sealed object as the key store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The PCRs (SHA-256 bank) the policy binds.
    pub pcrs: Vec<u8>,
    /// TPM2B_PUBLIC, marshalled, hex.
    pub public: String,
    /// TPM2B_PRIVATE (encrypted by the TPM), hex.
    pub private: String,
}

fn tpm_error(what: &str) -> impl Fn(tss_esapi::Error) -> VaultError + '_ {
    move |error| VaultError::Tpm(format!("{what}: {error}"))
}

fn context(tcti: &str) -> Result<Context, VaultError> {
    let conf = TctiNameConf::from_str(tcti)
        .map_err(|e| VaultError::Tpm(format!("{tcti:?} is not a TCTI: {e}")))?;
    Context::new(conf).map_err(|e| VaultError::Tpm(format!("cannot open the TPM at {tcti}: {e}")))
}

/// Checks a PCR list: 1 to 8 distinct indices in 0..=23.
pub fn check_pcrs(pcrs: &[u8]) -> Result<(), VaultError> {
    let mut seen = std::collections::BTreeSet::new();
    if pcrs.is_empty() || pcrs.len() > 8 {
        return Err(VaultError::KeyStore(
            "a TPM key is bound to 1 to 8 PCRs".into(),
        ));
    }
    for &pcr in pcrs {
        if pcr > 23 || !seen.insert(pcr) {
            return Err(VaultError::KeyStore(format!(
                "PCR {pcr} is out of range 0..=23 or listed twice"
            )));
        }
    }
    Ok(())
}

fn selection(pcrs: &[u8]) -> Result<PcrSelectionList, VaultError> {
    check_pcrs(pcrs)?;
    let slots = pcrs
        .iter()
        .map(|&n| PcrSlot::try_from(1u32 << n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(tpm_error("PCR slot"))?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(tpm_error("PCR selection"))
}

/// The storage root key: ECC P-256, AES-128-CFB for its children (the TCG's SRK template).
fn primary(context: &mut Context) -> Result<KeyHandle, VaultError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_decrypt(true)
        .with_restricted(true)
        .build()
        .map_err(tpm_error("SRK attributes"))?;
    let template = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(tpm_error("SRK parameters"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(tpm_error("SRK template"))?;
    let created = context
        .execute_with_nullauth_session(|c| {
            c.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(tpm_error("cannot create the storage root key"))?;
    Ok(created.key_handle)
}

fn policy_session(context: &mut Context, kind: SessionType) -> Result<PolicySession, VaultError> {
    let session = context
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tpm_error("cannot start a policy session"))?
        .ok_or_else(|| VaultError::Tpm("the TPM returned no session".into()))?;
    PolicySession::try_from(session).map_err(tpm_error("policy session"))
}

/// Seals `secret` (at most 128 bytes) to the current values of `pcrs`.
pub fn seal(tcti: &str, pcrs: &[u8], secret: &[u8]) -> Result<Sealed, VaultError> {
    let selection = selection(pcrs)?;
    let mut context = context(tcti)?;
    // The policy digest: PolicyPCR over the PCRs' current values.
    let (_, read, digests) = context
        .pcr_read(selection.clone())
        .map_err(tpm_error("cannot read the PCRs"))?;
    if read != selection {
        return Err(VaultError::Tpm(
            "the TPM has no SHA-256 bank for these PCRs".into(),
        ));
    }
    let mut hasher = Sha256::new();
    for digest in digests.value() {
        hasher.update(digest.value());
    }
    let pcr_digest =
        Digest::try_from(hasher.finalize().to_vec()).map_err(tpm_error("PCR digest"))?;
    let trial = policy_session(&mut context, SessionType::Trial)?;
    context
        .policy_pcr(trial, pcr_digest, selection)
        .map_err(tpm_error("PolicyPCR"))?;
    let policy = context
        .policy_get_digest(trial)
        .map_err(tpm_error("PolicyGetDigest"))?;
    let _ = context.flush_context(tss_esapi::handles::SessionHandle::from(trial).into());

    let srk = primary(&mut context)?;
    // Unsealed only through the policy: no userWithAuth, so no password can stand in for it.
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_admin_with_policy(true)
        .with_user_with_auth(false)
        .build()
        .map_err(tpm_error("sealed object attributes"))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(tpm_error("sealed object template"))?;
    let data = SensitiveData::try_from(secret.to_vec()).map_err(tpm_error("secret too large"))?;
    let created = context
        .execute_with_nullauth_session(|c| c.create(srk, public, None, Some(data), None, None));
    let _ = context.flush_context(srk.into());
    let created = created.map_err(tpm_error("cannot seal the key"))?;
    let public = created
        .out_public
        .marshall()
        .map_err(tpm_error("marshal the sealed object"))?;
    Ok(Sealed {
        pcrs: pcrs.to_vec(),
        public: hex::encode(public),
        private: hex::encode(created.out_private.value()),
    })
}

/// Unseals what [`seal`] sealed; refused by the TPM when a bound PCR has changed since.
pub fn unseal(tcti: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let selection = selection(&sealed.pcrs)?;
    let corrupt =
        |what: &str| VaultError::KeyStore(format!("the sealed TPM object's {what} is damaged"));
    let public = hex::decode(&sealed.public).map_err(|_| corrupt("public part"))?;
    let public = Public::unmarshall(&public).map_err(|_| corrupt("public part"))?;
    let private = hex::decode(&sealed.private).map_err(|_| corrupt("private part"))?;
    let private = Private::try_from(private).map_err(|_| corrupt("private part"))?;
    let mut context = context(tcti)?;
    let srk = primary(&mut context)?;
    let loaded = context.execute_with_nullauth_session(|c| c.load(srk, private, public));
    let _ = context.flush_context(srk.into());
    let object = loaded.map_err(tpm_error(
        "the TPM refuses to load the sealed key (another TPM, or its owner hierarchy was cleared)",
    ))?;
    let session = match policy_session(&mut context, SessionType::Policy) {
        Ok(session) => session,
        Err(error) => {
            let _ = context.flush_context(object.into());
            return Err(error);
        }
    };
    // An empty digest: the TPM uses the PCRs' values now.
    let unsealed = context
        .policy_pcr(session, Digest::default(), selection)
        .map_err(tpm_error("PolicyPCR"))
        .and_then(|()| {
            context
                .execute_with_session(Some(session.into()), |c| c.unseal(object.into()))
                .map_err(|error| {
                    let text = error.to_string();
                    if text.contains("policy") {
                        VaultError::PcrMismatch(sealed.pcrs.clone())
                    } else {
                        VaultError::Tpm(format!("cannot unseal the key: {text}"))
                    }
                })
        });
    let _ = context.flush_context(object.into());
    let _ = context.flush_context(tss_esapi::handles::SessionHandle::from(session).into());
    Ok(Zeroizing::new(unsealed?.value().to_vec()))
}
