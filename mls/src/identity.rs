//! Who a credential belongs to: a Matrix user and one of their devices.
//!
//! Every MLS leaf is one device. Its BasicCredential's identity is the TLS encoding of the user
//! id and the device id (two variable-length byte strings), so the Delivery Service can check that
//! a KeyPackage names the uploading device and map a Welcome's new members to devices, and
//! clients can show who a leaf is without asking anyone.

use openmls::prelude::{BasicCredential, Credential, CredentialType};
use tls_codec::{Deserialize as _, Serialize as _, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

/// A Matrix device as named in an MLS credential.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceIdentity {
    pub user_id: String,
    pub device_id: String,
}

#[derive(TlsSerialize, TlsDeserialize, TlsSize)]
struct EncodedIdentity {
    user_id: VLBytes,
    device_id: VLBytes,
}

impl DeviceIdentity {
    pub fn new(user_id: impl Into<String>, device_id: impl Into<String>) -> Self {
        DeviceIdentity { user_id: user_id.into(), device_id: device_id.into() }
    }

    /// The credential identity bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let encoded = EncodedIdentity {
            user_id: self.user_id.as_bytes().to_vec().into(),
            device_id: self.device_id.as_bytes().to_vec().into(),
        };
        // Serialising two byte strings into a vector cannot fail.
        encoded.tls_serialize_detached().unwrap_or_default()
    }

    /// Reads identity bytes; `None` unless they are exactly one encoded pair of UTF-8 strings.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let encoded = EncodedIdentity::tls_deserialize_exact(bytes).ok()?;
        let user_id = String::from_utf8(encoded.user_id.as_slice().to_vec()).ok()?;
        let device_id = String::from_utf8(encoded.device_id.as_slice().to_vec()).ok()?;
        (!user_id.is_empty() && !device_id.is_empty()).then_some(DeviceIdentity { user_id, device_id })
    }

    /// The BasicCredential naming this device.
    pub fn credential(&self) -> Credential {
        BasicCredential::new(self.to_bytes()).into()
    }

    /// The device a credential names; `None` for other credential types or malformed identities.
    pub fn from_credential(credential: &Credential) -> Option<Self> {
        if credential.credential_type() != CredentialType::Basic {
            return None;
        }
        let basic = BasicCredential::try_from(credential.clone()).ok()?;
        Self::from_bytes(basic.identity())
    }
}

impl std::fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user_id, self.device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_reject_garbage() {
        let id = DeviceIdentity::new("@alice:example.org", "ABCDEF");
        assert_eq!(DeviceIdentity::from_credential(&id.credential()), Some(id.clone()));
        assert_eq!(DeviceIdentity::from_bytes(&id.to_bytes()), Some(id));
        assert_eq!(DeviceIdentity::from_bytes(b"@alice:example.org/ABCDEF"), None);
        assert_eq!(DeviceIdentity::from_bytes(&[]), None);
        let mut trailing = DeviceIdentity::new("@a:b", "D").to_bytes();
        trailing.push(0);
        assert_eq!(DeviceIdentity::from_bytes(&trailing), None);
        let empty_device = DeviceIdentity::new("@a:b", "").to_bytes();
        assert_eq!(DeviceIdentity::from_bytes(&empty_device), None);
    }
}
