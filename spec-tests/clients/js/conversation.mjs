// matrix-js-sdk: two users hold a conversation, each through its own client and sync loop.
//
// A creates a room (given room version) and invites B; B sees the invite in its sync and joins;
// A sends messages that B receives; B replies; A edits (m.replace) and reacts (m.annotation);
// typing and a read receipt reach the other side; A redacts a message; A sends 100 messages
// after B's last sync token and B catches up with one limited sync and pages back with
// /messages; B leaves and A sees it. Every other observation comes from the observer's own
// startClient() sync loop: its events and its room model (edits applied, reactions aggregated,
// redactions applied, receipts, typing).
//
// Prints `ok <step>` per step (and `room <room id>` once); exits 0 only if every step passed.
// Bounded: each wait 15 s, 90 s overall.
// Usage: node conversation.mjs --url URL --server-name NAME --user-a LOCALPART --password-a PW
//                              --user-b LOCALPART --password-b PW --room-version V
import * as sdk from "matrix-js-sdk";
import { args, check, deadline, run } from "./common.mjs";

const WAIT_MS = 15_000;
deadline(90);

/** Waits (bounded) until `pred()` returns something truthy; prints `ok step` and returns it. */
async function until(pred, step, detail) {
  const end = Date.now() + WAIT_MS;
  while (Date.now() < end) {
    const got = pred();
    if (got) {
      console.log(`ok ${step}`);
      return got;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  check(false, step, `not seen within ${WAIT_MS / 1000} s: ${JSON.stringify(detail())}`);
}

/** Logs in, starts the sync loop and records what it delivers. */
async function party(localpart, password) {
  const anon = sdk.createClient({ baseUrl: args.url });
  const login = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: localpart },
    password,
    initial_device_display_name: "js-sdk conversation",
  });
  const client = sdk.createClient({
    baseUrl: args.url,
    accessToken: login.access_token,
    userId: login.user_id,
    deviceId: login.device_id,
  });
  const p = { client, userId: login.user_id, timeline: [], myMembership: [], members: [], typing: [], receipts: [], redactions: [] };
  client.on(sdk.RoomEvent.Timeline, (event, room, toStart) => {
    if (!toStart) p.timeline.push({ roomId: room?.roomId, event });
  });
  client.on(sdk.RoomEvent.MyMembership, (room, membership) => p.myMembership.push({ roomId: room.roomId, membership }));
  client.on(sdk.RoomMemberEvent.Membership, (_event, member) =>
    p.members.push({ roomId: member.roomId, userId: member.userId, membership: member.membership }),
  );
  client.on(sdk.RoomMemberEvent.Typing, (_event, member) =>
    p.typing.push({ roomId: member.roomId, userId: member.userId, typing: member.typing }),
  );
  client.on(sdk.RoomEvent.Receipt, (event, room) => p.receipts.push({ roomId: room.roomId, content: event.getContent() }));
  client.on(sdk.RoomEvent.Redaction, (event, room) => p.redactions.push({ roomId: room.roomId, event }));
  p.syncError = null;
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") {
        p.syncError = data?.error;
        reject(new Error(String(data?.error)));
      }
    });
  });
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  return p;
}

function timelineEvent(p, roomId, pred) {
  return p.timeline.find(({ roomId: r, event }) => r === roomId && pred(event))?.event;
}

const GAP = 100;
const gapBodies = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => `gap ${from + i}`);

/**
 * From B's last sync token, while A sends GAP numbered messages: one incremental sync with a
 * timeline limit of 10 (the client's low-level request; its sync loop has no one-off sync) is
 * limited; B pages back with createMessagesRequest from its prev_batch until it finds message 1
 * and so sees every message exactly once, in order. B's sync loop stays as it was.
 */
async function gappySync(a, b, roomId) {
  const oldToken = b.client.store.getSyncToken();
  for (let n = 1; n <= GAP; n++) await a.client.sendMessage(roomId, { msgtype: "m.text", body: `gap ${n}` });
  check(true, "send the gap messages");

  const sync = await b.client.http.authedRequest(sdk.Method.Get, "/sync", {
    since: oldToken,
    timeout: "0",
    filter: JSON.stringify({ room: { timeline: { limit: 10 } } }),
  });
  const timeline = sync.rooms?.join?.[roomId]?.timeline;
  check(timeline, "gappy sync", sync.rooms);
  check(timeline.limited === true && typeof timeline.prev_batch === "string", "gappy sync is limited with a prev_batch", [timeline.limited, timeline.prev_batch]);
  const bodyOf = (e) => (e.type === "m.room.message" && e.sender === a.userId ? e.content?.body : undefined);
  const newest = timeline.events.map(bodyOf).filter(Boolean);
  check(JSON.stringify(newest) === JSON.stringify(gapBodies(GAP - 9, GAP)), "gappy sync holds the newest 10", newest);

  const older = []; // newest first, as dir=b returns them
  let from = timeline.prev_batch;
  for (let pages = 0; !older.includes("gap 1"); pages++) {
    check(pages < 20 && from, "page back", `stopped after ${pages} pages, ${older.length} messages, end ${from}`);
    const page = await b.client.createMessagesRequest(roomId, from, 25, sdk.Direction.Backward);
    older.push(...page.chunk.map(bodyOf).filter((body) => body?.startsWith("gap ")));
    from = page.end;
  }
  check(true, "paged back through the gap");
  const bodies = [...older.reverse(), ...newest];
  check(JSON.stringify(bodies) === JSON.stringify(gapBodies(1, GAP)), "gap messages all seen once in order", bodies);
}

async function main() {
  const a = await party(args["user-a"], args["password-a"]);
  check(a.userId === `@${args["user-a"]}:${args["server-name"]}`, "login a", a.userId);
  const b = await party(args["user-b"], args["password-b"]);
  check(b.userId === `@${args["user-b"]}:${args["server-name"]}`, "login b", b.userId);

  const { room_id: roomId } = await a.client.createRoom({
    name: "js-sdk conversation",
    topic: "interop",
    room_version: args["room-version"],
  });
  check(typeof roomId === "string" && roomId.startsWith("!"), "create room", roomId);
  console.log(`room ${roomId}`);

  await a.client.invite(roomId, b.userId);
  check(true, "invite");
  await until(() => b.myMembership.find((m) => m.roomId === roomId && m.membership === "invite"), "invite seen by b", () => b.myMembership);
  const invitedRoom = b.client.getRoom(roomId);
  check(invitedRoom?.name === "js-sdk conversation", "invite state carries the room name", invitedRoom?.name);

  const joined = await b.client.joinRoom(roomId);
  check(joined.roomId === roomId, "join", joined.roomId);
  await until(() => a.members.find((m) => m.roomId === roomId && m.userId === b.userId && m.membership === "join"), "join seen by a", () => a.members);
  const roomB = await until(
    () => {
      const room = b.client.getRoom(roomId);
      const topic = room?.currentState.getStateEvents("m.room.topic", "")?.getContent().topic;
      return room && room.getMember(a.userId)?.membership === "join" && room.getMember(b.userId)?.membership === "join" && topic === "interop" && room;
    },
    "room state seen by b",
    () => b.client.getRoom(roomId)?.getMembers().map((m) => [m.userId, m.membership]),
  );
  check(roomB.getVersion() === args["room-version"], "room version seen by b", roomB.getVersion());

  const bodies = ["first message", "second message", "third message"];
  const sent = [];
  for (const body of bodies) sent.push((await a.client.sendMessage(roomId, { msgtype: "m.text", body })).event_id);
  check(sent.every((id) => typeof id === "string" && id.startsWith("$")), "send messages", sent);
  const fromA = () => b.timeline.filter(({ roomId: r, event }) => r === roomId && event.getType() === "m.room.message" && event.getSender() === a.userId).map(({ event }) => event);
  await until(() => fromA().length >= 3, "messages received", () => b.timeline.map(({ event }) => event.getType()));
  const got = fromA().slice(0, 3);
  check(
    JSON.stringify(got.map((e) => e.getContent().body)) === JSON.stringify(bodies) && JSON.stringify(got.map((e) => e.getId())) === JSON.stringify(sent),
    "messages received in order",
    got.map((e) => [e.getId(), e.getContent().body]),
  );

  const { event_id: reply } = await b.client.sendMessage(roomId, {
    msgtype: "m.text",
    body: "a reply",
    "m.relates_to": { "m.in_reply_to": { event_id: sent[0] } },
  });
  const replyEvent = await until(() => timelineEvent(a, roomId, (e) => e.getId() === reply), "reply received", () => a.timeline.length);
  check(replyEvent.replyEventId === sent[0], "reply names its parent", replyEvent.getContent());

  const { event_id: edit } = await a.client.sendMessage(roomId, {
    msgtype: "m.text",
    body: "* first message, edited",
    "m.new_content": { msgtype: "m.text", body: "first message, edited" },
    "m.relates_to": { rel_type: "m.replace", event_id: sent[0] },
  });
  await until(() => timelineEvent(b, roomId, (e) => e.getId() === edit), "edit received", () => b.timeline.length);
  // The client applies the edit to the original event in its room model.
  const original = roomB.findEventById(sent[0]);
  await until(
    () => original?.replacingEventId() === edit && original.getContent().body === "first message, edited",
    "edit replaces the first message",
    () => [original?.replacingEventId(), original?.getContent()],
  );

  const { event_id: reaction } = await a.client.sendEvent(roomId, "m.reaction", {
    "m.relates_to": { rel_type: "m.annotation", event_id: reply, key: "👍" },
  });
  await until(() => timelineEvent(b, roomId, (e) => e.getId() === reaction), "reaction received", () => b.timeline.length);
  const annotations = () =>
    roomB.relations.getChildEventsForEvent(reply, "m.annotation", "m.reaction")?.getSortedAnnotationsByKey() ?? [];
  await until(
    () => annotations().some(([key, events]) => key === "👍" && [...events].some((e) => e.getSender() === a.userId)),
    "reaction annotates the reply",
    () => annotations().map(([key, events]) => [key, events.size]),
  );

  await a.client.sendTyping(roomId, true, 20_000);
  await until(() => b.typing.find((t) => t.roomId === roomId && t.userId === a.userId && t.typing), "typing seen by b", () => b.typing);
  await a.client.sendTyping(roomId, false, 0);
  await until(
    () => roomB.getMember(a.userId)?.typing === false && b.typing.some((t) => t.roomId === roomId && t.userId === a.userId && !t.typing),
    "typing stop seen by b",
    () => b.typing,
  );

  // For the edit, A's latest message after B's own reply. (The client itself adds local
  // receipts for every sender's events, never for another user's event, so only the server's
  // receipt can satisfy this.)
  await b.client.sendReadReceipt(roomB.findEventById(edit), sdk.ReceiptType.Read);
  const roomA = a.client.getRoom(roomId);
  await until(
    () =>
      a.receipts.some(({ roomId: r, content }) => r === roomId && content[edit]?.["m.read"]?.[b.userId]) &&
      roomA.getEventReadUpTo(b.userId) === edit,
    "read receipt seen by a",
    () => a.receipts,
  );

  await a.client.redactEvent(roomId, sent[1], undefined, { reason: "typo" });
  check(true, "redact");
  const redaction = await until(
    () => b.redactions.find(({ roomId: r, event }) => r === roomId && event.getAssociatedId() === sent[1])?.event,
    "redaction seen by b",
    () => b.redactions.length,
  );
  check(redaction.getSender() === a.userId && redaction.getContent().reason === "typo", "redaction names its reason", redaction.getContent());
  const history = await b.client.createMessagesRequest(roomId, null, 20, sdk.Direction.Backward);
  const redacted = history.chunk.find((e) => e.event_id === sent[1]);
  check(
    roomB.findEventById(sent[1])?.isRedacted() && redacted && redacted.content.body === undefined && redacted.unsigned?.redacted_because,
    "history shows the message redacted",
    redacted,
  );

  await gappySync(a, b, roomId);

  await b.client.leave(roomId);
  check(true, "leave");
  await until(() => a.members.find((m) => m.roomId === roomId && m.userId === b.userId && m.membership === "leave"), "leave seen by a", () => a.members);
  await until(() => b.myMembership.find((m) => m.roomId === roomId && m.membership === "leave"), "leave seen by b", () => b.myMembership);
  const { joined_rooms: rooms } = await b.client.getJoinedRooms();
  check(!rooms.includes(roomId), "room gone from b's joined rooms", rooms);

  check(a.syncError === null && b.syncError === null, "sync loops without errors", [a.syncError, b.syncError]);
  a.client.stopClient();
  b.client.stopClient();
}

run(main);
