//! An MLS device for black-box tests of the hub: KeyPackages in the upload format, groups whose
//! id is the room id, commit bundles as the server takes them, Welcomes, and messages — built on
//! openmls directly so the server is checked against the library, not against itself.

use openmls::prelude::{
    Capabilities, CredentialWithKey, Extension, ExtensionType, Extensions, ExternalSender, GroupId, KeyPackage,
    KeyPackageIn, LeafNodeIndex, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProcessedMessageContent, ProtocolVersion,
    SignaturePublicKey, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use poststelle_mls::reference::{COMMIT_REF_FIELD, MediaRef};
use poststelle_mls::{DeviceIdentity, Suite, codec, key_package::reference_name};
use serde_json::{Value, json};
use tls_codec::{Deserialize as _, Serialize as _};

/// One device: its keys, and its groups by room id.
pub struct MlsTestDevice {
    pub id: DeviceIdentity,
    pub suite: Suite,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    groups: std::collections::BTreeMap<String, MlsGroup>,
}

/// What a commit sends to `PUT /rooms/{room}/state/m.mls.commit/`.
pub struct Bundle {
    pub commit: String,
    pub welcome: Option<String>,
    pub group_info: String,
}

impl Bundle {
    /// The request body, with or without the Welcome.
    pub fn body(&self, algorithm: &str, with_welcome: bool) -> Value {
        let mut body = json!({
            "algorithm": algorithm,
            "ciphertext": self.commit,
            "de.poststelle.group_info": self.group_info,
        });
        if let (true, Some(w)) = (with_welcome, &self.welcome) {
            body["de.poststelle.welcome"] = w.clone().into();
        }
        body
    }

    /// The commit's bytes (TLS-encoded), as uploaded when it goes by reference.
    pub fn commit_bytes(&self) -> Vec<u8> {
        codec::decode(&self.commit).expect("base64")
    }

    /// The request body with the commit sent by reference to its upload at `url`.
    pub fn body_by_reference(&self, algorithm: &str, url: &str, with_welcome: bool) -> Value {
        let mut body = self.body(algorithm, with_welcome);
        body.as_object_mut().expect("an object").remove("ciphertext");
        body[COMMIT_REF_FIELD] = json!(MediaRef::of(url, &self.commit_bytes()));
        body
    }
}

/// Uploads bytes to a server's media repository as `token`'s user; returns the `mxc://` URI.
pub async fn upload(s: &crate::TestServer, token: Option<&str>, bytes: Vec<u8>) -> String {
    let (status, body) = s.raw("POST", "/_matrix/media/v3/upload?filename=commit.mls", token, bytes).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["content_uri"].as_str().expect("content_uri").to_owned()
}

/// Downloads `mxc://server/id` through a server's authenticated media endpoint.
pub async fn download(s: &crate::TestServer, token: &str, mxc: &str) -> Vec<u8> {
    let path = mxc.strip_prefix("mxc://").expect("an mxc URI");
    let response = s
        .http
        .get(format!("{}/_matrix/client/v1/media/download/{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), reqwest::StatusCode::OK, "downloading {mxc}");
    response.bytes().await.expect("the media").to_vec()
}

/// The commit an `m.mls.commit` content carries (base64): inline, or fetched through `s` by its
/// reference and checked against it.
pub async fn commit_of(s: &crate::TestServer, token: &str, content: &Value) -> String {
    if let Some(inline) = content["ciphertext"].as_str() {
        return inline.to_owned();
    }
    let reference: MediaRef = serde_json::from_value(content[COMMIT_REF_FIELD].clone()).expect("a reference");
    let bytes = download(s, token, &reference.url).await;
    reference.check(&bytes).expect("the referenced commit");
    codec::encode(&bytes)
}

fn b64(message: &MlsMessageOut) -> String {
    codec::encode(&message.tls_serialize_detached().expect("serialisable"))
}

fn decode(b64: &str) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(codec::decode(b64).expect("base64")).expect("an MLS message")
}

impl MlsTestDevice {
    pub fn new(user_id: &str, device_id: &str, suite: Suite) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(suite.ciphersuite().signature_algorithm()).expect("key pair");
        signer.store(provider.storage()).expect("stored");
        Self { id: DeviceIdentity::new(user_id, device_id), suite, provider, signer, groups: Default::default() }
    }

    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey { credential: self.id.credential(), signature_key: self.signer.public().into() }
    }

    /// A KeyPackage as uploaded: (key id, value); a last-resort one for the fallback slot.
    pub fn key_package(&self, last_resort: bool) -> (String, String) {
        let mut builder = KeyPackage::builder();
        if last_resort {
            let capabilities = Capabilities::builder().extensions(vec![ExtensionType::LastResort]).build();
            builder = builder.mark_as_last_resort().leaf_node_capabilities(capabilities);
        }
        let bundle =
            builder.build(self.suite.ciphersuite(), &self.provider, &self.signer, self.credential()).expect("kp");
        let kp = bundle.key_package();
        (
            format!("{}:{}", self.suite.algorithm(), reference_name(kp)),
            codec::encode(&kp.tls_serialize_detached().expect("serialisable")),
        )
    }

    /// A KeyPackage whose lifetime ended an hour ago: (key id, value).
    pub fn expired_key_package(&self) -> (String, String) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let bundle = KeyPackage::builder()
            .key_package_lifetime(openmls::prelude::Lifetime::init(now - 7200, now - 3600))
            .build(self.suite.ciphersuite(), &self.provider, &self.signer, self.credential())
            .expect("kp");
        let kp = bundle.key_package();
        (
            format!("{}:{}", self.suite.algorithm(), reference_name(kp)),
            codec::encode(&kp.tls_serialize_detached().expect("serialisable")),
        )
    }

    /// Creates the room's group listing the server (`signature_key`, `credential`, base64) as
    /// external sender; returns the GroupInfo of epoch 0.
    pub fn create_group(&mut self, room_id: &str, signature_key: &str, credential: &str) -> String {
        let credential = openmls::prelude::Credential::tls_deserialize_exact(codec::decode(credential).expect("b64"))
            .expect("a credential");
        let sender =
            ExternalSender::new(SignaturePublicKey::from(codec::decode(signature_key).expect("b64")), credential);
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(self.suite.ciphersuite())
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .with_group_context_extensions(Extensions::single(Extension::ExternalSenders(vec![sender])).expect("ext"))
            .build();
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            GroupId::from_slice(room_id.as_bytes()),
            self.credential(),
        )
        .expect("group");
        let info = b64(&group.export_group_info(self.provider.crypto(), &self.signer, true).expect("group info"));
        self.groups.insert(room_id.to_owned(), group);
        info
    }

    fn group(&mut self, room_id: &str) -> &mut MlsGroup {
        self.groups.get_mut(room_id).expect("a group for the room")
    }

    fn bundle(commit: MlsMessageOut, welcome: Option<MlsMessageOut>, info: Option<MlsMessageOut>) -> Bundle {
        Bundle {
            commit: b64(&commit),
            welcome: welcome.as_ref().map(b64),
            group_info: b64(&info.expect("a GroupInfo with every commit")),
        }
    }

    /// A commit adding the KeyPackages (values as claimed); left pending.
    pub fn add(&mut self, room_id: &str, key_packages: &[String]) -> Bundle {
        let packages: Vec<KeyPackage> = key_packages
            .iter()
            .map(|v| {
                KeyPackageIn::tls_deserialize_exact(codec::decode(v).expect("b64"))
                    .expect("kp")
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .expect("a valid KeyPackage")
            })
            .collect();
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.groups.get_mut(room_id).expect("group");
        let (commit, welcome, info) = group.add_members(provider, signer, &packages).expect("add");
        Self::bundle(commit, Some(welcome), info.map(MlsMessageOut::from))
    }

    /// A commit that replaces the group's context extensions with none, dropping the server
    /// from the external senders; left pending.
    pub fn drop_external_senders(&mut self, room_id: &str) -> Bundle {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.groups.get_mut(room_id).expect("group");
        let (commit, welcome, info) =
            group.update_group_context_extensions(provider, Extensions::empty(), signer).expect("extensions");
        Self::bundle(commit, welcome, info.map(MlsMessageOut::from))
    }

    /// A commit that only refreshes the device's own keys; left pending.
    pub fn self_update(&mut self, room_id: &str) -> Bundle {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.groups.get_mut(room_id).expect("group");
        let (commit, welcome, info) =
            group.self_update(provider, signer, Default::default()).expect("update").into_messages();
        Self::bundle(commit, welcome, info)
    }

    /// Takes in the server's proposals (base64 PublicMessages) and commits them; left pending.
    pub fn commit_proposals(&mut self, room_id: &str, proposals: &[String]) -> Bundle {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.groups.get_mut(room_id).expect("group");
        for p in proposals {
            let message = decode(p).try_into_protocol_message().expect("a proposal");
            let processed = group.process_message(provider, message).expect("processable proposal");
            let ProcessedMessageContent::ProposalMessage(q) = processed.into_content() else { panic!("a proposal") };
            group.store_pending_proposal(provider.storage(), *q).expect("stored");
        }
        let (commit, welcome, info) = group.commit_to_pending_proposals(provider, signer).expect("commit");
        Self::bundle(commit, welcome, info.map(MlsMessageOut::from))
    }

    /// The server accepted our pending commit.
    pub fn merge(&mut self, room_id: &str) {
        let provider = &self.provider;
        self.groups.get_mut(room_id).expect("group").merge_pending_commit(provider).expect("merge");
    }

    /// The server refused our pending commit.
    pub fn discard(&mut self, room_id: &str) {
        let provider = &self.provider;
        self.groups.get_mut(room_id).expect("group").clear_pending_commit(provider.storage()).expect("clear");
    }

    /// Applies someone else's accepted commit (base64, from the room's `m.mls.commit`).
    pub fn apply_commit(&mut self, room_id: &str, commit: &str) {
        let provider = &self.provider;
        let group = self.groups.get_mut(room_id).expect("group");
        let message = decode(commit).try_into_protocol_message().expect("a commit");
        let processed = group.process_message(provider, message).expect("a valid commit");
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else { panic!("commit") };
        group.merge_staged_commit(provider, *staged).expect("merged");
    }

    /// Joins from a Welcome (base64); returns the room id (the group id).
    pub fn join(&mut self, welcome: &str) -> String {
        let MlsMessageBodyIn::Welcome(welcome) = decode(welcome).extract() else { panic!("a Welcome") };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        let group = StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .expect("a Welcome for us")
            .into_group(&self.provider)
            .expect("joined");
        let room_id = String::from_utf8(group.group_id().as_slice().to_vec()).expect("utf-8 group id");
        self.groups.insert(room_id.clone(), group);
        room_id
    }

    pub fn epoch(&mut self, room_id: &str) -> u64 {
        self.group(room_id).epoch().as_u64()
    }

    /// An application message (base64 PrivateMessage).
    pub fn encrypt(&mut self, room_id: &str, plaintext: &str) -> String {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.groups.get_mut(room_id).expect("group");
        b64(&group.create_message(provider, signer, plaintext.as_bytes()).expect("encrypt"))
    }

    /// Decrypts an application message; `None` when this device cannot.
    pub fn decrypt(&mut self, room_id: &str, ciphertext: &str) -> Option<String> {
        let provider = &self.provider;
        let group = self.groups.get_mut(room_id)?;
        let message = decode(ciphertext).try_into_protocol_message().ok()?;
        let processed = group.process_message(provider, message).ok()?;
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => String::from_utf8(m.into_bytes()).ok(),
            _ => None,
        }
    }

    /// Leaves of the group, for checking who is in it.
    pub fn members(&mut self, room_id: &str) -> Vec<DeviceIdentity> {
        self.group(room_id).members().filter_map(|m| DeviceIdentity::from_credential(&m.credential)).collect()
    }

    /// The leaf of a device, if it is in the group.
    pub fn leaf_of(&mut self, room_id: &str, id: &DeviceIdentity) -> Option<LeafNodeIndex> {
        self.group(room_id)
            .members()
            .find(|m| DeviceIdentity::from_credential(&m.credential).as_ref() == Some(id))
            .map(|m| m.index)
    }
}

/// Runs `poststelle-client` with a state directory; returns stdout, failing on a non-zero exit.
pub fn cli(state: &std::path::Path, args: &[&str]) -> String {
    let binary = crate::binary().with_file_name("poststelle-client");
    let out = std::process::Command::new(&binary)
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "poststelle-client {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Listens until a message arrives (bounded); returns the printed lines.
pub fn cli_listen(state: &std::path::Path, download: &std::path::Path) -> Vec<Value> {
    for _ in 0..20 {
        let out = cli(
            state,
            &["listen", "--once", "--timeout-ms", "500", "--download-dir", download.to_str().expect("utf-8 path")],
        );
        let lines: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if !lines.is_empty() {
            return lines;
        }
    }
    panic!("no message arrived");
}
