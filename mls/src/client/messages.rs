//! Joining from a Welcome, and the application messages of `m.room.encrypted`.

use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, StagedWelcome};
use tls_codec::Deserialize as _;

use super::commits::{check_epoch, decode_protocol_message};
use super::{MlsClientError, MlsDevice, Result, encode_message, join_config, mls_error};
use crate::{DeviceIdentity, Suite, codec};

/// An application message decrypted, with the device that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub sender: DeviceIdentity,
    pub plaintext: Vec<u8>,
}

impl MlsDevice {
    /// Joins the group a Welcome (base64 MlsMessage) invites this device to, using the
    /// KeyPackage it was claimed with; returns the room id.
    pub fn join_from_welcome(&mut self, welcome: &str) -> Result<String> {
        let bytes = codec::decode(welcome).ok_or(MlsClientError::Malformed("welcome"))?;
        let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| MlsClientError::Malformed("welcome"))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(MlsClientError::UnexpectedContent { expected: "a Welcome" });
        };
        let suite = Suite::from_ciphersuite(welcome.ciphersuite()).ok_or(MlsClientError::UnsupportedSuite)?;
        let staged =
            StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None).map_err(mls_error)?;
        let room_id = String::from_utf8(staged.group_context().group_id().as_slice().to_vec())
            .map_err(|_| MlsClientError::Malformed("group id (not a room id)"))?;
        if self.metadata.rooms.contains_key(&room_id) {
            return Err(MlsClientError::RoomExists(room_id));
        }
        staged.into_group(&self.provider).map_err(mls_error)?;
        self.metadata.rooms.insert(room_id.clone(), suite.algorithm());
        self.save()?;
        Ok(room_id)
    }

    /// Encrypts an application message for the room's current epoch; base64 PrivateMessage.
    pub fn encrypt(&mut self, room_id: &str, plaintext: &[u8]) -> Result<String> {
        let mut group = self.group(room_id)?;
        if group.pending_commit().is_some() {
            return Err(MlsClientError::CommitPending);
        }
        let signer = self.signer(group.ciphersuite())?;
        let message = group.create_message(&self.provider, &signer, plaintext).map_err(mls_error)?;
        self.save()?;
        encode_message(&message)
    }

    /// Decrypts an application message (base64 PrivateMessage) of the room's current epoch.
    /// A message of another epoch, for example one sent after this device was removed, is an
    /// error; so is one this device sent itself ([`MlsClientError::OwnMessage`]), which MLS
    /// gives its sender no key to read.
    pub fn decrypt(&mut self, room_id: &str, ciphertext: &str) -> Result<Decrypted> {
        let mut group = self.group(room_id)?;
        let message = decode_protocol_message(ciphertext, "application message")?;
        check_epoch(&group, &message)?;
        let processed = group.process_message(&self.provider, message).map_err(mls_error)?;
        let sender = DeviceIdentity::from_credential(processed.credential())
            .ok_or(MlsClientError::Malformed("sender credential"))?;
        let plaintext = match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(message) => message.into_bytes(),
            ProcessedMessageContent::OwnPrivateMessage => return Err(MlsClientError::OwnMessage),
            _ => return Err(MlsClientError::UnexpectedContent { expected: "an application message" }),
        };
        // Decrypting consumed a ratchet key; keep the store in step so it is never reused.
        self.save()?;
        Ok(Decrypted { sender, plaintext })
    }
}
