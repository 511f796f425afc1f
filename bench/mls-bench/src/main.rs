//! Measures the MLS hub (DESIGN §6) against a running release `poststelle`:
//!
//! - commit acceptance (`PUT /rooms/{room}/state/m.mls.commit/`, request to `200`) for groups of
//!   the given sizes, and the Delivery Service check alone in-process (`DsGroup::accept_commit`);
//! - KeyPackage validation in-process, `/keys/upload` of ten KeyPackages and `/keys/claim`;
//! - the size of a Welcome (with ratchet tree) for one added device and the time to join from it;
//! - the sizes of commits, GroupInfos and the hub's stored group state.
//!
//! The tool starts the server itself, on a fresh data directory (its managed PostgreSQL) and
//! loopback ports, and stops it at the end. Group members other than the creator are local MLS
//! identities that are not server users, except the few devices (further logins of the creator's
//! user) that commit once to fill the ratchet tree (see `fill_tree`). It prints a JSON report and
//! Markdown tables.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn, ProposalStore, PublicGroup, RatchetTreeIn};
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use poststelle_mls::{DeviceIdentity, Suite, codec, ds::DsGroup, key_package};
use serde_json::{Value, json};
use spec_tests::mls::{Bundle, MlsTestDevice};
use tls_codec::Deserialize as _;

#[derive(Parser)]
#[command(about = "Measures the MLS hub of a release poststelle on loopback")]
struct Args {
    /// The `poststelle` binary (a release build).
    #[arg(long, default_value = "target/release/poststelle")]
    server_bin: PathBuf,
    /// A directory for the server's data (created; must not hold a data directory yet) and log.
    #[arg(long)]
    scratch: PathBuf,
    /// Group sizes (members, the creator included), ascending.
    #[arg(long, value_delimiter = ',', default_value = "16,128,512,1000")]
    sizes: Vec<usize>,
    /// Measured commits of the creator at each size.
    #[arg(long, default_value_t = 50)]
    commits: usize,
    /// At most this many Add proposals per commit while the group grows.
    #[arg(long, default_value_t = 100)]
    adds_per_commit: usize,
    /// In-process KeyPackage validations.
    #[arg(long, default_value_t = 1000)]
    validations: usize,
    /// `/keys/upload` requests of ten KeyPackages each.
    #[arg(long, default_value_t = 50)]
    uploads: usize,
    /// `/keys/claim` requests (at most ten times `--uploads`).
    #[arg(long, default_value_t = 200)]
    claims: usize,
    /// The client listener's port on 127.0.0.1 (the federation listener gets the next one).
    #[arg(long, default_value_t = 18720)]
    port: u16,
}

const PASSWORD: &str = "mls-bench-password-1";
/// The server refuses a commit whose base64 plus this overhead exceeds the 64 KiB event limit.
const MAX_EVENT_BYTES: usize = 65_536;
const EVENT_OVERHEAD: usize = 2_048;

/// The server process; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn start(args: &Args) -> anyhow::Result<Self> {
        let data = args.scratch.join("data");
        ensure!(!data.exists(), "{} exists: give a fresh --scratch", data.display());
        std::fs::create_dir_all(&args.scratch)?;
        let log = std::fs::File::create(args.scratch.join("server.log"))?;
        let child = Command::new(&args.server_bin)
            .arg("serve")
            .env("POSTSTELLE_DATA_DIR", &data)
            .env("POSTSTELLE_LISTENERS__CLIENT__ADDR", format!("127.0.0.1:{}", args.port))
            .env("POSTSTELLE_LISTENERS__FEDERATION__ADDR", format!("127.0.0.1:{}", args.port + 1))
            .env("POSTSTELLE_FEDERATION__ALLOW_LIST", "no-federation.invalid")
            .env("POSTSTELLE_REGISTRATION__ENABLED", "true")
            .env("POSTSTELLE_RATE_LIMITS__ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.server_bin.display()))?;
        Ok(Server { child })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

struct Reply {
    status: u16,
    body: Value,
    elapsed: Duration,
}

impl Reply {
    /// The reply, if it is a `200`.
    fn ok(self) -> anyhow::Result<Self> {
        ensure!(self.status == 200, "{} {}", self.status, self.body);
        Ok(self)
    }
}

impl Http {
    /// One request; timed from sending it (the body already serialised) to the whole response read.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let mut builder = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = body {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(serde_json::to_vec(body)?);
        }
        let request = builder.build()?;
        let start = Instant::now();
        let response = self.client.execute(request).await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let elapsed = start.elapsed();
        Ok(Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), elapsed })
    }
}

struct Account {
    user_id: String,
    device_id: String,
    token: String,
}

impl Account {
    fn from_body(body: &Value) -> anyhow::Result<Self> {
        let field = |name: &str| body[name].as_str().map(str::to_owned).with_context(|| format!("no {name} in {body}"));
        Ok(Account { user_id: field("user_id")?, device_id: field("device_id")?, token: field("access_token")? })
    }
}

async fn register(http: &Http, localpart: &str) -> anyhow::Result<Account> {
    let body = json!({"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}});
    Account::from_body(
        &http.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(&body)).await?.ok()?.body,
    )
}

async fn login(http: &Http, localpart: &str) -> anyhow::Result<Account> {
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": PASSWORD});
    Account::from_body(
        &http.call(reqwest::Method::POST, "/_matrix/client/v3/login", None, Some(&body)).await?.ok()?.body,
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile (p95 of 20 values is the 19th).
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn summary(values: &[f64]) -> Value {
    json!({
        "n": values.len(),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "max": values.iter().copied().fold(f64::NAN, f64::max),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn raw_len(b64: &str) -> usize {
    codec::decode(b64).map(|b| b.len()).unwrap_or(0)
}

/// The hub's view of the group at epoch 0, built as the server builds it (`DsGroup::create`
/// additionally checks that the group lists the server's own key, which only the server has).
fn shadow_group(room: &str, group_info_b64: &str) -> anyhow::Result<DsGroup> {
    let bytes = codec::decode(group_info_b64).context("base64")?;
    let MlsMessageBodyIn::GroupInfo(info) = MlsMessageIn::tls_deserialize_exact(bytes)?.extract() else {
        bail!("not a GroupInfo");
    };
    let tree = info.extensions().ratchet_tree().map(|t| t.ratchet_tree().clone()).context("no ratchet tree")?;
    let storage = MemoryStorage::default();
    PublicGroup::from_external(&RustCrypto::default(), &storage, tree, info, ProposalStore::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(DsGroup::load(room, &codec::storage_to_bytes(&storage))?)
}

/// What the hub's GroupInfo check costs at the current size: rebuilding a public group from the
/// GroupInfo and the ratchet tree, which verifies every leaf's signature and the tree's hashes.
fn time_group_info_check(shadow: &DsGroup, group_info_b64: &str) -> anyhow::Result<f64> {
    let tree_bytes = shadow.ratchet_tree();
    let bytes = codec::decode(group_info_b64).context("base64")?;
    let start = Instant::now();
    let tree = RatchetTreeIn::tls_deserialize_exact(&tree_bytes)?;
    let MlsMessageBodyIn::GroupInfo(info) = MlsMessageIn::tls_deserialize_exact(bytes)?.extract() else {
        bail!("not a GroupInfo");
    };
    PublicGroup::from_external(&RustCrypto::default(), &MemoryStorage::default(), tree, info, ProposalStore::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ms(start.elapsed()))
}

/// A device of the creator's user that joins the group and commits once.
struct Active {
    account: Account,
    mls: MlsTestDevice,
    leaf: usize,
}

struct Bench {
    http: Http,
    room: String,
    algorithm: String,
    creator: Account,
    creator_mls: MlsTestDevice,
    /// The hub's state, kept in step with the server's for the in-process check.
    shadow: DsGroup,
    /// Active devices in the group that have not committed yet; they follow every commit.
    live: Vec<Active>,
}

/// One submitted commit.
struct Submitted {
    status: u16,
    body: Value,
    http_ms: f64,
    ds_ms: f64,
    request_bytes: usize,
    commit_bytes: usize,
    group_info_bytes: usize,
}

impl Bench {
    fn commit_path(&self) -> String {
        format!("/_matrix/client/v3/rooms/{}/state/m.mls.commit/", self.room)
    }

    /// Checks the bundle in-process (timed), submits it (timed) and, when the hub accepts it,
    /// brings every local member and the in-process hub state to the new epoch. `committer`:
    /// index into `live`, or `None` for the creator.
    async fn submit(&mut self, bundle: &Bundle, committer: Option<usize>) -> anyhow::Result<Submitted> {
        let (user, device, token) = match committer {
            None => (&self.creator.user_id, &self.creator.device_id, &self.creator.token),
            Some(i) => {
                let a = &self.live[i].account;
                (&a.user_id, &a.device_id, &a.token)
            }
        };
        // The check moves the group it runs on: it runs on a copy, kept if the server accepts.
        let mut next = self.shadow.try_clone()?;
        let server = self.shadow.external_senders().into_iter().next().context("no external sender")?;
        let start = Instant::now();
        let checked = next.accept_commit(&server, &bundle.commit, &bundle.group_info, None, user, Some(device));
        let ds_ms = ms(start.elapsed());
        checked.context("the in-process Delivery Service refused the commit")?;
        let body = bundle.body(&self.algorithm, false);
        let request_bytes = serde_json::to_vec(&body)?.len();
        let token = token.clone();
        let reply = self.http.call(reqwest::Method::PUT, &self.commit_path(), Some(&token), Some(&body)).await?;
        let submitted = Submitted {
            status: reply.status,
            body: reply.body,
            http_ms: ms(reply.elapsed),
            ds_ms,
            request_bytes,
            commit_bytes: raw_len(&bundle.commit),
            group_info_bytes: raw_len(&bundle.group_info),
        };
        let room = self.room.clone();
        if reply.status != 200 {
            match committer {
                None => self.creator_mls.discard(&room),
                Some(i) => self.live[i].mls.discard(&room),
            }
            return Ok(submitted);
        }
        match committer {
            None => self.creator_mls.merge(&room),
            Some(_) => self.creator_mls.apply_commit(&room, &bundle.commit),
        }
        for (i, active) in self.live.iter_mut().enumerate() {
            if Some(i) == committer {
                active.mls.merge(&room);
            } else {
                active.mls.apply_commit(&room, &bundle.commit);
            }
        }
        self.shadow = next;
        Ok(submitted)
    }

    /// A self-update of the creator, required to be accepted; with the bundle.
    async fn creator_update(&mut self) -> anyhow::Result<(Submitted, f64, Bundle)> {
        let room = self.room.clone();
        let start = Instant::now();
        let bundle = self.creator_mls.self_update(&room);
        let create_ms = ms(start.elapsed());
        let submitted = self.submit(&bundle, None).await?;
        ensure!(submitted.status == 200, "commit refused: {} {}", submitted.status, submitted.body);
        Ok((submitted, create_ms, bundle))
    }
}

/// What one group size gave.
#[derive(Default)]
struct Stage {
    members: usize,
    load_before: String,
    add_commits: Vec<(usize, usize, f64, f64)>,
    welcome_bytes: usize,
    welcome_add_commit_bytes: usize,
    join_ms: f64,
    unfilled_update: Option<Value>,
    fill_commits: Vec<Value>,
    http_ms: Vec<f64>,
    ds_ms: Vec<f64>,
    create_ms: Vec<f64>,
    commit_bytes: Vec<usize>,
    group_info_bytes: Vec<usize>,
    request_bytes: Vec<usize>,
    state_bytes: usize,
    state_load_ms: Vec<f64>,
    state_save_ms: Vec<f64>,
    tree_members: usize,
    group_info_check_ms: Vec<f64>,
}

fn is_fill_leaf(leaf: usize) -> bool {
    leaf >= 2 && leaf.is_power_of_two()
}

/// Grows the group to `target` members and measures it.
async fn stage(bench: &mut Bench, target: usize, args: &Args, filler_user: &str) -> anyhow::Result<Stage> {
    let room = bench.room.clone();
    let mut out = Stage { members: target, ..Stage::default() };
    let current = bench.creator_mls.members(&room).len();
    ensure!(target > current + 1, "sizes must grow by at least two");

    // Every leaf but the last by adds of at most `adds_per_commit`; a device whose leaf is a
    // power of two is an active one (a login of the creator's user), the rest local identities.
    // The client's add commits carry an UpdatePath, which encrypts to every leaf under a blank
    // parent node: when a commit would exceed the event limit, it is built again with fewer adds.
    let mut waiting = std::collections::VecDeque::new();
    for leaf in current..target - 1 {
        if is_fill_leaf(leaf) {
            let account = login(&bench.http, "mlsbench").await?;
            let mls = MlsTestDevice::new(&account.user_id, &account.device_id, Suite::DEFAULT);
            waiting.push_back((mls.key_package(false).1, Some(Active { account, mls, leaf })));
        } else {
            let filler = MlsTestDevice::new(filler_user, &format!("F{leaf:05}"), Suite::DEFAULT);
            waiting.push_back((filler.key_package(false).1, None));
        }
    }
    let mut batch = args.adds_per_commit;
    while !waiting.is_empty() {
        let n = batch.min(waiting.len());
        let packages: Vec<String> = waiting.iter().take(n).map(|(kp, _)| kp.clone()).collect();
        let bundle = bench.creator_mls.add(&room, &packages);
        if bundle.commit.len() + EVENT_OVERHEAD > MAX_EVENT_BYTES {
            bench.creator_mls.discard(&room);
            ensure!(n > 1, "a commit adding one member is over the event limit");
            batch = n * 3 / 4;
            continue;
        }
        let s = bench.submit(&bundle, None).await?;
        ensure!(s.status == 200, "add commit refused: {} {}", s.status, s.body);
        out.add_commits.push((n, s.commit_bytes, s.http_ms, s.ds_ms));
        let welcome = bundle.welcome.as_deref().context("an add commit has a Welcome")?;
        for (_, active) in waiting.drain(..n) {
            if let Some(mut active) = active {
                active.mls.join(welcome);
                bench.live.push(active);
            }
        }
    }

    // The last member: one Add, its Welcome measured, and the join from it timed.
    let mut joiner = MlsTestDevice::new(filler_user, &format!("F{:05}", target - 1), Suite::DEFAULT);
    let bundle = bench.creator_mls.add(&room, &[joiner.key_package(false).1]);
    let welcome = bundle.welcome.clone().context("a Welcome")?;
    let s = bench.submit(&bundle, None).await?;
    ensure!(s.status == 200, "add commit refused: {} {}", s.status, s.body);
    out.welcome_bytes = raw_len(&welcome);
    out.welcome_add_commit_bytes = s.commit_bytes;
    let start = Instant::now();
    joiner.join(&welcome);
    out.join_ms = ms(start.elapsed());
    out.tree_members = bench.creator_mls.members(&room).len();
    ensure!(out.tree_members == target, "the group has {} members, not {target}", out.tree_members);

    // The creator's first update, while the new parts of the tree are still blank.
    let start = Instant::now();
    let bundle = bench.creator_mls.self_update(&room);
    let create_ms = ms(start.elapsed());
    let s = bench.submit(&bundle, None).await?;
    out.unfilled_update = Some(json!({
        "status": s.status, "errcode": s.body.get("errcode"), "commit_bytes": s.commit_bytes,
        "request_bytes": s.request_bytes, "http_ms": s.http_ms, "ds_ms": s.ds_ms, "create_ms": create_ms,
    }));

    fill_tree(bench, &mut out).await?;

    // The hub's stored state at this size: its size, and reading and writing it.
    for _ in 0..10 {
        let start = Instant::now();
        let bytes = bench.shadow.to_bytes();
        out.state_save_ms.push(ms(start.elapsed()));
        out.state_bytes = bytes.len();
        let start = Instant::now();
        DsGroup::load(&room, &bytes)?;
        out.state_load_ms.push(ms(start.elapsed()));
    }

    out.load_before = loadavg();
    let mut last_group_info = None;
    for _ in 0..args.commits {
        let (s, create_ms, bundle) = bench.creator_update().await?;
        last_group_info = Some(bundle.group_info);
        out.http_ms.push(s.http_ms);
        out.ds_ms.push(s.ds_ms);
        out.create_ms.push(create_ms);
        out.commit_bytes.push(s.commit_bytes);
        out.group_info_bytes.push(s.group_info_bytes);
        out.request_bytes.push(s.request_bytes);
    }
    if let Some(info) = last_group_info {
        for _ in 0..10 {
            out.group_info_check_ms.push(time_group_info_check(&bench.shadow, &info)?);
        }
    }
    Ok(out)
}

/// Each active device commits a self-update once, filling the parent nodes on its path: with a
/// device at every leaf 2^k, every subtree on the creator's copath gets a non-blank root, so the
/// creator's UpdatePath encrypts to O(log n) nodes as in a group whose members update their keys.
async fn fill_tree(bench: &mut Bench, out: &mut Stage) -> anyhow::Result<()> {
    let room = bench.room.clone();
    while !bench.live.is_empty() {
        let bundle = bench.live[0].mls.self_update(&room);
        let leaf = bench.live[0].leaf;
        let at = bench.creator_mls.leaf_of(&room, &bench.live[0].mls.id).map(|l| l.u32());
        let s = bench.submit(&bundle, Some(0)).await?;
        out.fill_commits.push(json!({
            "leaf": leaf, "tree_leaf": at, "status": s.status, "errcode": s.body.get("errcode"),
            "commit_bytes": s.commit_bytes, "http_ms": s.http_ms,
        }));
        bench.live.remove(0);
    }
    Ok(())
}

/// KeyPackages: validation in-process, uploads of ten and claims over HTTP.
async fn key_packages(http: &Http, creator: &Account, args: &Args) -> anyhow::Result<Value> {
    let algorithm = Suite::DEFAULT.algorithm();
    let owner = register(http, "mlskeys").await?;
    let device = MlsTestDevice::new(&owner.user_id, &owner.device_id, Suite::DEFAULT);
    let identity = DeviceIdentity::new(&owner.user_id, &owner.device_id);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();

    let packages: Vec<(String, String)> = (0..args.validations).map(|_| device.key_package(false)).collect();
    let value_bytes = packages.first().map(|(_, v)| raw_len(v)).unwrap_or(0);
    let load_validate = loadavg();
    let mut validate_ms = Vec::new();
    for (id, value) in &packages {
        let name = id.split_once(':').map(|(_, n)| n).context("key id")?;
        let start = Instant::now();
        let valid = key_package::validate_upload(&algorithm, name, value, &identity, false, now);
        validate_ms.push(ms(start.elapsed()));
        valid.map_err(|e| anyhow::anyhow!("{e}"))?;
    }

    let load_upload = loadavg();
    let mut upload_ms = Vec::new();
    let mut request_bytes = 0;
    for _ in 0..args.uploads {
        let keys: serde_json::Map<String, Value> =
            (0..10).map(|_| device.key_package(false)).map(|(id, v)| (id, v.into())).collect();
        let body = json!({"one_time_keys": keys});
        request_bytes = serde_json::to_vec(&body)?.len();
        let reply = http
            .call(reqwest::Method::POST, "/_matrix/client/v3/keys/upload", Some(&owner.token), Some(&body))
            .await?
            .ok()?;
        upload_ms.push(ms(reply.elapsed));
    }

    // Keys are handed out only to users sharing a room with the owner.
    let room = json!({"preset": "private_chat", "invite": [owner.user_id]});
    http.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&creator.token), Some(&room)).await?.ok()?;
    let load_claim = loadavg();
    let mut claim_ms = Vec::new();
    let claim = json!({"one_time_keys": {owner.user_id.clone(): {owner.device_id.clone(): algorithm}}});
    for _ in 0..args.claims.min(10 * args.uploads) {
        let reply = http
            .call(reqwest::Method::POST, "/_matrix/client/v3/keys/claim", Some(&creator.token), Some(&claim))
            .await?
            .ok()?;
        let keys = &reply.body["one_time_keys"][&owner.user_id][&owner.device_id];
        ensure!(keys.as_object().is_some_and(|k| k.len() == 1), "no KeyPackage claimed: {}", reply.body);
        claim_ms.push(ms(reply.elapsed));
    }
    Ok(json!({
        "key_package_bytes": value_bytes,
        "validate_upload_ms": summary(&validate_ms), "load_before_validate": load_validate,
        "upload_10_ms": summary(&upload_ms), "upload_request_bytes": request_bytes, "load_before_upload": load_upload,
        "claim_ms": summary(&claim_ms), "load_before_claim": load_claim,
    }))
}

fn stage_json(s: &Stage) -> Value {
    let bytes = |v: &[usize]| json!({"min": v.iter().min(), "max": v.iter().max()});
    json!({
        "members": s.members,
        "load_before_commits": s.load_before,
        "commit_http_ms": summary(&s.http_ms),
        "commit_ds_ms": summary(&s.ds_ms),
        "commit_create_ms": summary(&s.create_ms),
        "commit_bytes": bytes(&s.commit_bytes),
        "group_info_bytes": bytes(&s.group_info_bytes),
        "request_bytes": bytes(&s.request_bytes),
        "state_bytes": s.state_bytes,
        "state_load_ms": summary(&s.state_load_ms),
        "state_save_ms": summary(&s.state_save_ms),
        "group_info_check_ms": summary(&s.group_info_check_ms),
        "welcome_bytes": s.welcome_bytes,
        "welcome_add_commit_bytes": s.welcome_add_commit_bytes,
        "join_ms": s.join_ms,
        "unfilled_update": s.unfilled_update,
        "fill_commits": s.fill_commits,
        "add_commits": s.add_commits.iter().map(|(n, b, h, d)| json!({"adds": n, "commit_bytes": b, "http_ms": h, "ds_ms": d})).collect::<Vec<_>>(),
    })
}

fn print_tables(stages: &[Stage], keys: &Value) {
    println!(
        "\n| members | commit accepted over HTTP, ms p50 / p95 / max | DS check in-process, ms p50 / p95 / max | commit built by the client, ms p50 | commit, bytes | GroupInfo, bytes | load before |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in stages {
        println!(
            "| {} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.1} | {}–{} | {}–{} | {} |",
            s.members,
            percentile(&s.http_ms, 0.5),
            percentile(&s.http_ms, 0.95),
            s.http_ms.iter().copied().fold(f64::NAN, f64::max),
            percentile(&s.ds_ms, 0.5),
            percentile(&s.ds_ms, 0.95),
            s.ds_ms.iter().copied().fold(f64::NAN, f64::max),
            percentile(&s.create_ms, 0.5),
            s.commit_bytes.iter().min().unwrap_or(&0),
            s.commit_bytes.iter().max().unwrap_or(&0),
            s.group_info_bytes.iter().min().unwrap_or(&0),
            s.group_info_bytes.iter().max().unwrap_or(&0),
            s.load_before,
        );
    }
    println!(
        "\n| members | Welcome for one device, bytes | join from it, ms | hub state, bytes | state load / save, ms p50 | GroupInfo check, ms p50 | first update before filling: bytes, status, HTTP ms, DS ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in stages {
        let u = s.unfilled_update.clone().unwrap_or_default();
        println!(
            "| {} | {} | {:.1} | {} | {:.1} / {:.1} | {:.1} | {} B, {} {}, {:.1}, {:.1} |",
            s.members,
            s.welcome_bytes,
            s.join_ms,
            s.state_bytes,
            percentile(&s.state_load_ms, 0.5),
            percentile(&s.state_save_ms, 0.5),
            percentile(&s.group_info_check_ms, 0.5),
            u["commit_bytes"],
            u["status"],
            u["errcode"].as_str().unwrap_or(""),
            u["http_ms"].as_f64().unwrap_or(f64::NAN),
            u["ds_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("\nKeyPackages: {keys}");
}

async fn run(args: &Args, http: &Http) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = http.call(reqwest::Method::GET, "/_matrix/client/versions", None, None).await {
            ready = r.status == 200;
        }
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(ready, "the server did not answer within 60 s");

    let creator = register(http, "mlsbench").await?;
    let algorithm = Suite::DEFAULT.algorithm();
    eprintln!("keypackages (load {})", loadavg());
    let keys = key_packages(http, &creator, args).await?;

    let create = json!({"preset": "private_chat", "initial_state": [
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": algorithm}}
    ]});
    let reply = http
        .call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&creator.token), Some(&create))
        .await?
        .ok()?;
    let room = reply.body["room_id"].as_str().context("room_id")?.to_owned();
    let sender = http
        .call(
            reqwest::Method::GET,
            "/_matrix/client/unstable/de.poststelle/mls/external_sender",
            Some(&creator.token),
            None,
        )
        .await?
        .ok()?
        .body;
    let mut creator_mls = MlsTestDevice::new(&creator.user_id, &creator.device_id, Suite::DEFAULT);
    let info = creator_mls.create_group(
        &room,
        sender["signature_key"].as_str().context("signature_key")?,
        sender["credential"].as_str().context("credential")?,
    );
    let start = json!({"algorithm": algorithm, "de.poststelle.group_info": info});
    http.call(
        reqwest::Method::PUT,
        &format!("/_matrix/client/v3/rooms/{room}/state/m.mls.commit/"),
        Some(&creator.token),
        Some(&start),
    )
    .await?
    .ok()?;
    let shadow = shadow_group(&room, &info)?;
    let filler_user = format!("@filler:{}", creator.user_id.split_once(':').map(|(_, s)| s).unwrap_or("localhost"));
    let mut bench = Bench {
        http: Http { client: http.client.clone(), base: http.base.clone() },
        room,
        algorithm,
        creator,
        creator_mls,
        shadow,
        live: Vec::new(),
    };
    let mut stages = Vec::new();
    for &size in &args.sizes {
        eprintln!("growing to {size} members (load {})", loadavg());
        let s = stage(&mut bench, size, args, &filler_user).await?;
        eprintln!("{}", stage_json(&s));
        stages.push(s);
    }
    print_tables(&stages, &keys);
    Ok(json!({"key_packages": keys, "groups": stages.iter().map(stage_json).collect::<Vec<_>>()}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = Server::start(&args)?;
    let http = Http { client: reqwest::Client::new(), base: format!("http://127.0.0.1:{}", args.port) };
    let result = run(&args, &http).await;
    drop(server);
    let report = result?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "load_at_end": loadavg(),
            "version": option_env!("CARGO_PKG_VERSION"),
            "result": report,
        }))?
    );
    Ok(())
}
