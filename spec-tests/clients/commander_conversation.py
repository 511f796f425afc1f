"""matrix-commander (a CLI client built on matrix-nio): a send/receive round trip between two users.

Each user has its own credentials file and store; every step is one matrix-commander command,
as a person would type it. A creates an unencrypted room and invites B; B lists and joins its
invites; A sends a message that B's `--listen once` sync prints; B replies and A receives it;
B leaves and A's member list no longer has B. matrix-commander creates rooms in the server's
default version (it has no option for another).

Prints `ok <step>` per step (and `room <room id>` once) and exits 0 only if every step passed.
Bounded: 30 s per command, 90 s overall.
Usage: commander_conversation.py --url URL --server-name NAME --user-a LOCALPART --password-a PW
                                 --user-b LOCALPART --password-b PW --room-version V
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interop import check, conversation_args

COMMANDER = Path(sys.executable).parent / "matrix-commander"


class User:
    """One matrix-commander identity: a credentials file and a store in a directory of its own."""

    def __init__(self, home: Path, user_id: str):
        self.home, self.user_id = home, user_id
        home.mkdir()

    def run(self, *args, step):
        """Runs one command; its JSON output lines (`-o JSON`) as a list."""
        deadline = DEADLINE - time.monotonic()
        try:
            done = subprocess.run(
                [COMMANDER, "-c", self.home / "credentials.json", "-s", self.home / "store",
                 "-o", "JSON", *args],
                capture_output=True, text=True, timeout=min(30, max(1, deadline)),
                env={**os.environ, "HOME": str(self.home)}, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            check(False, step, f"matrix-commander {args} timed out: {e.stderr}")
        if done.returncode != 0:
            check(False, step, f"matrix-commander {args} exited {done.returncode}:\n"
                               f"{done.stdout}\n{done.stderr}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


DEADLINE = time.monotonic() + 90


def messages(lines, sender):
    return [l["source"] for l in lines
            if l.get("source", {}).get("type") == "m.room.message"
            and l["source"].get("sender") == sender]


def run(args, tmp: Path):
    a = User(tmp / "a", f"@{args.user_a}:{args.server_name}")
    b = User(tmp / "b", f"@{args.user_b}:{args.server_name}")
    for user, password, step in ((a, args.password_a, "login a"), (b, args.password_b, "login b")):
        user.run("--login", "password", "--homeserver", args.url, "--user-login", user.user_id,
                 "--password", password, "--device", "matrix-commander",
                 "--room-default", f"!unused:{args.server_name}", step=step)
        creds = json.loads((user.home / "credentials.json").read_text())
        check(creds.get("user_id") == user.user_id and creds.get("access_token"), step, creds)

    [created] = a.run("--room-create", "commander", "--name", "Commander room",
                      "--topic", "interop", "--plain", step="create room")
    check(created.get("room_id", "").startswith("!") and created.get("encrypted") is False
          and created.get("alias_full") == f"#commander:{args.server_name}", "create room", created)
    room = created["room_id"]
    print(f"room {room}", flush=True)

    a.run("--room-invite", room, "-u", b.user_id, step="invite")
    check(True, "invite")
    invites = b.run("--room-invites", "LIST+JOIN", step="invite seen by b")
    check({"room_id": room, "event": "m.room.member", "membership": "invite"} in invites,
          "invite seen by b", invites)
    [joined] = b.run("--joined-rooms", step="join")
    check(room in joined.get("rooms", []), "join", joined)

    [info] = b.run("--get-room-info", room, step="room state seen by b")
    check(info.get("name") == "Commander room" and info.get("topic") == "interop"
          and info.get("canonical_alias") == created["alias_full"], "room state seen by b", info)
    check(info.get("room_version") == args.room_version, "room version seen by b", info)

    a.run("-m", "hello from matrix-commander", "-r", room, "--plain", step="send")
    got = messages(b.run("--listen", "once", step="message received by b"), a.user_id)
    check([m["content"]["body"] for m in got] == ["hello from matrix-commander"]
          and got[0].get("room_id") == room, "message received by b", got)

    b.run("-m", "a reply", "-r", room, "--plain", step="reply")
    got = messages(a.run("--listen", "once", step="reply received by a"), b.user_id)
    check([m["content"]["body"] for m in got] == ["a reply"], "reply received by a", got)
    again = b.run("--listen", "once", step="nothing new for b")
    check(messages(again, a.user_id) == [], "nothing new for b", again)

    [members] = a.run("--joined-members", room, step="joined members")
    check(sorted(m["user_id"] for m in members["members"]) == sorted([a.user_id, b.user_id]),
          "joined members", members)
    b.run("--room-leave", room, step="leave")
    check(True, "leave")
    [members] = a.run("--joined-members", room, step="leave seen by a")
    check([m["user_id"] for m in members["members"]] == [a.user_id], "leave seen by a", members)


def main():
    args = conversation_args()
    check(COMMANDER.exists(), "matrix-commander installed", COMMANDER)
    with tempfile.TemporaryDirectory(prefix="commander-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
