"""matrix-nio against a homeserver: login, profile, filter, push rules, account data, logout.

Prints `ok <step>` per step and exits 0 only if every step passed. Bounded: 60 s overall.
Usage: nio_client.py --url URL --user LOCALPART --password PW [--with-sync]
"""
import argparse
import asyncio
import sys

from nio import (AsyncClient, LoginResponse, ProfileGetDisplayNameResponse, SyncResponse,
                 UploadFilterResponse, WhoamiResponse)

from interop import check


async def run(args):
    client = AsyncClient(args.url, args.user)
    try:
        resp = await client.send("GET", "/_matrix/client/versions")
        versions = (await resp.json()).get("versions", [])
        check(resp.status == 200 and "v1.1" in versions, "versions", versions)

        login = await client.login(args.password, device_name="nio interop")
        check(isinstance(login, LoginResponse), "login", login)
        user_id = login.user_id
        check(user_id.startswith(f"@{args.user}:"), "login user id", user_id)

        who = await client.whoami()
        check(isinstance(who, WhoamiResponse) and who.user_id == user_id
              and who.device_id == login.device_id, "whoami", who)

        await client.set_displayname("Alice from nio")
        name = await client.get_displayname(user_id)
        check(isinstance(name, ProfileGetDisplayNameResponse)
              and name.displayname == "Alice from nio", "display name round trip", name)

        uploaded = await client.upload_filter(room={"timeline": {"limit": 7}},
                                              event_fields=["type", "content"])
        check(isinstance(uploaded, UploadFilterResponse), "filter upload", uploaded)
        filter_id = uploaded.filter_id
        resp = await client.send("GET", f"/_matrix/client/v3/user/{user_id}/filter/{filter_id}",
                                 headers={"Authorization": f"Bearer {client.access_token}"})
        got = await resp.json()
        check(resp.status == 200 and got.get("room", {}).get("timeline", {}).get("limit") == 7
              and got.get("event_fields") == ["type", "content"], "filter round trip", got)

        resp = await client.send("GET", "/_matrix/client/v3/pushrules/",
                                 headers={"Authorization": f"Bearer {client.access_token}"})
        rules = (await resp.json()).get("global", {})
        override_ids = [r["rule_id"] for r in rules.get("override", [])]
        underride_ids = [r["rule_id"] for r in rules.get("underride", [])]
        check(".m.rule.master" in override_ids and ".m.rule.message" in underride_ids,
              "default push rules", (override_ids, underride_ids))

        path = f"/_matrix/client/v3/user/{user_id}/account_data/org.example.nio"
        auth = {"Authorization": f"Bearer {client.access_token}"}
        resp = await client.send("PUT", path, data='{"answer": 42}', headers=auth)
        check(resp.status == 200, "account data set", resp.status)
        resp = await client.send("GET", path, headers=auth)
        check((await resp.json()) == {"answer": 42}, "account data round trip")

        if args.with_sync:
            sync = await client.sync(timeout=0, full_state=True)
            check(isinstance(sync, SyncResponse) and sync.next_batch, "sync", sync)

        token = client.access_token
        await client.logout()
        resp = await client.send("GET", "/_matrix/client/v3/account/whoami",
                                 headers={"Authorization": f"Bearer {token}"})
        body = await resp.json()
        check(resp.status == 401 and body.get("errcode") == "M_UNKNOWN_TOKEN",
              "old token refused after logout", body)
    finally:
        await client.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--with-sync", action="store_true")
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), timeout=60))
    except asyncio.TimeoutError:
        print("FAIL timeout: not finished within 60 s")
        sys.exit(1)


if __name__ == "__main__":
    main()
