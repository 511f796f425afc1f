// matrix-js-sdk against a homeserver: login, profile, filter, push rules, account data,
// optionally startClient() until PREPARED, logout.
// Prints `ok <step>` per step; exits 0 only if every step passed. Bounded: 60 s overall.
// Usage: node client.mjs --url URL --user LOCALPART --password PW [--with-sync]
import * as sdk from "matrix-js-sdk";
import { args, check, deadline, run } from "./common.mjs";

deadline(60);

async function main() {
  const anon = sdk.createClient({ baseUrl: args.url });
  const login = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: args.user },
    password: args.password,
    initial_device_display_name: "js-sdk interop",
  });
  check(login.access_token && login.user_id.startsWith(`@${args.user}:`), "login", login);

  const client = sdk.createClient({
    baseUrl: args.url,
    accessToken: login.access_token,
    userId: login.user_id,
    deviceId: login.device_id,
  });

  const who = await client.whoami();
  check(who.user_id === login.user_id && who.device_id === login.device_id, "whoami", who);

  await client.setDisplayName("Alice from js-sdk");
  const profile = await client.getProfileInfo(login.user_id);
  check(profile.displayname === "Alice from js-sdk", "display name round trip", profile);

  const definition = { room: { timeline: { limit: 9 } }, event_format: "client" };
  const filter = await client.createFilter(definition);
  check(filter.filterId !== undefined, "filter upload", filter);
  const fetched = await client.getFilter(login.user_id, filter.filterId, false);
  check(fetched.getDefinition().room?.timeline?.limit === 9, "filter round trip", fetched.getDefinition());

  const rules = await client.getPushRules();
  const overrides = rules.global.override.map((r) => r.rule_id);
  const underrides = rules.global.underride.map((r) => r.rule_id);
  check(overrides.includes(".m.rule.master") && underrides.includes(".m.rule.message"), "default push rules", { overrides, underrides });

  await client.setAccountDataRaw("org.example.js", { answer: 42 });
  const data = await client.getAccountDataFromServer("org.example.js");
  check(data?.answer === 42, "account data round trip", data);

  if (args["with-sync"]) {
    const prepared = new Promise((resolve, reject) => {
      client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "PREPARED") resolve();
        if (state === "ERROR") reject(new Error(String(data?.error)));
      });
    });
    await client.startClient({ initialSyncLimit: 5 });
    await prepared;
    check(true, "sync reached PREPARED");
    client.stopClient();
  }

  await client.logout(true);
  try {
    await sdk.createClient({ baseUrl: args.url, accessToken: login.access_token }).whoami();
    check(false, "old token refused after logout", "whoami still worked");
  } catch (e) {
    check(e.errcode === "M_UNKNOWN_TOKEN" && e.httpStatus === 401, "old token refused after logout", { errcode: e.errcode, status: e.httpStatus });
  }
}

run(main);
