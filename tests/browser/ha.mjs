// System → High availability in headless Chromium, on two appliances at
// once: both single at first (the header says so); a pairing code made on
// A's page, shown once with its expiry; on B's page a malformed peer
// address and a wrong code named next to their fields, then a join with
// A's sync address and the code; both pages show the pair (role, peer,
// link up, in sync); B's header says standby, its Status and
// Configuration tabs carry the banner linking to A's admin UI, and its
// change buttons are disabled while A's are not; a VRRP settings error
// shown next to its field, then settings with a shared management address
// that the address table lists with its instance and the banner links to.
// Then a split: A is restarted where B cannot
// reach it (the test does it, asked through a file in CONTROL_DIR), B's
// page offers the forced takeover only now, B takes the active role, and
// both commit a change of their own; A is restarted where B reaches it
// again, B's longer history wins, and A's page lists A's change as not
// applied, A now the standby linking to B. A made active again from its
// own page (confirmed): the roles swap on both. Last, unpaired from B
// (confirmed): both single.
// Usage: node ha.mjs BASE_A BASE_B SYNC_A ARTIFACT_DIR CONTROL_DIR
// (both appliances set up with the harness's password, each with
// `--ha-listen`; SYNC_A is A's sync address, IP:port).
import { existsSync, writeFileSync } from "node:fs";
import { newPage, password, run } from "./harness.mjs";

const [baseA, baseB, syncA, artifacts, control] = process.argv.slice(2);

// Ask the test for `what` (a file in CONTROL_DIR) and wait until it says
// `done` (at most 60 s).
async function ask(what, done) {
  writeFileSync(`${control}/${what}`, "");
  for (let i = 0; i < 600 && !existsSync(`${control}/${done}`); i++) await new Promise((r) => setTimeout(r, 100));
  if (!existsSync(`${control}/${done}`)) throw new Error(`the test did not do ${what}`);
}

// Log in again after a restart, if the session did not survive it.
async function reopen(page, url) {
  await page.goto(url);
  await page.locator("#login:visible, #dashboard:visible").first().waitFor();
  if (await page.locator("#login").isVisible()) {
    await page.fill("#login-form input[name=password]", password);
    await page.click("#login-form button");
    await page.locator("#dashboard").waitFor({ state: "visible" });
  }
}

// A config change committed through the page's own API helper (a new DNS
// TTL): its version.
async function commitTtl(page, ttl) {
  return page.evaluate(async (value) => {
    const current = await api("GET", "/api/v1/config");
    current.data.dns.ttl = value;
    const { status, data } = await api("PUT", "/api/v1/config", current.data);
    if (status !== 200) throw new Error(`PUT config: ${status} ${JSON.stringify(data)}`);
    return data.version;
  }, ttl);
}

async function login(page, url) {
  await page.goto(url);
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-form input[name=password]", password);
  await page.click("#login-form button");
  await page.locator("#dashboard").waitFor({ state: "visible" });
}

const role = (page, name) => page.locator(`#ha-role[data-role=${name}]`).waitFor();
const fact = (page, name, text) => page.locator(`#ha-facts [data-fact=${name}]`, { hasText: text }).waitFor();
const tab = (page, name) => page.click(`#tabs button[data-tab=${name}]`);

async function memberButtons(page, disabled) {
  const buttons = page.locator("#pools button[data-action]");
  await buttons.first().waitFor();
  const want = disabled ? "disabled" : "enabled";
  // The buttons are drawn again on every status event: wait for the state.
  await page.waitForFunction(([wanted]) => {
    const all = [...document.querySelectorAll("#pools button[data-action]")];
    return all.length > 0 && all.every((b) => b.disabled === (wanted === "disabled"));
  }, [want]);
}

await run(artifacts, 180_000, async (browser, shot) => {
  const a = await newPage(browser);
  const b = await newPage(browser);
  for (const page of [a, b]) page.on("dialog", (dialog) => dialog.accept());
  await login(a, baseA);
  await login(b, baseB);
  await role(a, "standalone");
  await role(b, "standalone");
  if ((await a.locator("#ha-role").textContent()) !== "single") throw new Error("the header of a single appliance");
  if (await b.locator("#ha-banner").isVisible()) throw new Error("a banner on a single appliance");

  // A: a pairing code, shown once with its expiry.
  await tab(a, "system");
  await a.locator("#ha-unpaired").waitFor({ state: "visible" });
  await a.locator("#ha-self dd", { hasText: syncA }).waitFor();
  await a.click("#ha-code-create");
  await a.locator("#ha-code").waitFor({ state: "visible" });
  const code = (await a.locator("#ha-code-value").textContent()).trim();
  if (!/^[A-Z0-9]{4}(-[A-Z0-9]{4}){3}$/.test(code)) throw new Error(`pairing code ${code}`);
  if (!(await a.locator("#ha-code-expires").textContent()).trim()) throw new Error("no expiry shown");
  await a.locator("#ha-code-peer", { hasText: syncA }).waitFor();
  await shot(a, "a-pairing-code");

  // B: errors next to their fields, then the join.
  await tab(b, "system");
  await b.locator("#ha-unpaired").waitFor({ state: "visible" });
  await b.fill("#ha-join-form input[name=peer]", "not an address");
  await b.fill("#ha-join-form input[name=code]", code);
  await b.click("#ha-join-form button[type=submit]");
  await b.locator('#ha-join-form .field-error[data-error-for="peer"]').waitFor();
  await shot(b, "b-join-field-error");
  await b.fill("#ha-join-form input[name=peer]", syncA);
  await b.fill("#ha-join-form input[name=code]", "AAAA-AAAA-AAAA-AAAA");
  await b.click("#ha-join-form button[type=submit]");
  await b.locator('#ha-join-form .field-error[data-error-for="code"]').waitFor();
  if (await b.locator('#ha-join-form .field-error[data-error-for="peer"]').count()) throw new Error("a stale field error");
  await b.fill("#ha-join-form input[name=code]", code);
  await b.click("#ha-join-form button[type=submit]");
  await b.locator("#ha-paired").waitFor({ state: "visible" });

  // Both show the pair.
  await fact(b, "role", "standby");
  await fact(b, "peer-address", syncA);
  await fact(b, "link", "up");
  await fact(b, "sync", "in sync");
  await role(b, "standby");
  await a.locator("#ha-paired").waitFor({ state: "visible" });
  await fact(a, "role", "active");
  await fact(a, "link", "up");
  await role(a, "active");
  const fingerprintA = (await a.request.get(`${baseA}api/v1/ha`).then((r) => r.json())).fingerprint;
  await fact(b, "peer-fingerprint", fingerprintA);
  if (await b.locator("#ha-banner").isVisible()) throw new Error("the standby's banner on the System tab");
  await shot(a, "a-paired-active");
  await shot(b, "b-paired-standby");

  // B, the standby: read-only, with the banner linking to A.
  await tab(b, "status");
  await b.locator("#ha-banner").waitFor({ state: "visible" });
  const href = await b.locator("#ha-active-link").getAttribute("href");
  if (href !== baseA) throw new Error(`the banner links to ${href}, not ${baseA}`);
  await memberButtons(b, true);
  await shot(b, "b-standby-status");
  await tab(b, "config");
  await b.locator("#ha-banner").waitFor({ state: "visible" });
  if (!(await b.locator("#config-review").isDisabled())) throw new Error("Review enabled on the standby");
  await tab(a, "status");
  await memberButtons(a, false);
  if (await a.locator("#ha-banner").isVisible()) throw new Error("a banner on the active");

  // VRRP: a settings error next to its field, nothing stored.
  await tab(b, "system");
  await b.click("#vrrp-edit summary");
  await b.fill("#vrrp-form input[name=interface]", "no/such");
  await b.fill("#vrrp-form input[name=virtual_router_id]", "51");
  await b.fill("#vrrp-form input[name=priority]", "100");
  await b.click("#vrrp-form button[type=submit]");
  await b.locator('#vrrp-form .field-error[data-error-for="interface"]').waitFor();
  const vrrp = await b.request.get(`${baseB}api/v1/ha/vrrp`).then((r) => r.json());
  if (vrrp.settings !== null) throw new Error("refused VRRP settings were stored");
  await shot(b, "b-vrrp-field-error");
  // Valid settings with a shared management address (stored only: no
  // keepalived runs here, nothing is sent): it is listed with its instance,
  // and the standby's banner links to it. Then VRRP off again.
  await b.fill("#vrrp-form input[name=interface]", "lo");
  await b.fill("#vrrp-form input[name=source_v4]", "192.0.2.2");
  await b.fill("#vrrp-form input[name=peer_v4]", "192.0.2.1");
  await b.fill("#vrrp-form input[name=management_address]", "192.0.2.30");
  await b.click("#vrrp-form button[type=submit]");
  await b.locator("#vrrp-held", { hasText: "keepalived holds" }).waitFor();
  const management = b.locator('#vrrp-addresses tr[data-address="192.0.2.30"]');
  await management.locator("td", { hasText: "poolgate_v4" }).waitFor();
  await management.locator('[data-state="unknown"]').waitFor();
  if (await b.locator("#vrrp-form .field-error").count()) throw new Error("field errors stay after saving");
  await shot(b, "b-vrrp-saved");
  await tab(b, "status");
  const adminPort = new URL(baseA).port;
  const shared = await b.locator("#ha-active-link").getAttribute("href");
  if (shared !== `https://192.0.2.30:${adminPort}/`) throw new Error(`the banner links to ${shared}, not the management address`);
  await tab(b, "system");
  await b.click("#vrrp-off");
  await b.locator("#vrrp-held", { hasText: "poolgate holds" }).waitFor();
  await tab(b, "status");
  if ((await b.locator("#ha-active-link").getAttribute("href")) !== baseA) throw new Error("the banner does not link to A again");
  await tab(b, "system");

  // A split: A restarted where B cannot reach it. Only now is the forced
  // takeover offered on B, explained; B takes the active role.
  await ask("isolate-a", "a-isolated");
  await fact(b, "link", "down");
  await b.locator("#ha-force-label").waitFor({ state: "visible" });
  await b.locator("#ha-force-help").waitFor({ state: "visible" });
  if (!(await b.locator("#ha-failover").isDisabled())) throw new Error("failover offered without the link or force");
  await shot(b, "b-link-down");
  await b.check("#ha-force");
  await b.click("#ha-failover");
  await fact(b, "role", "active");
  await role(b, "active");
  // Each commits a change of its own; B's history is the longer.
  await commitTtl(b, 61);
  await commitTtl(b, 62);
  await reopen(a, baseA);
  await role(a, "active");
  const lost = await commitTtl(a, 71);
  // A where B reaches it again: B's history wins, A's change is not applied.
  await ask("rejoin-a", "a-back");
  await reopen(a, baseA);
  await role(a, "standby");
  await tab(a, "system");
  await fact(a, "link", "up");
  await a.locator(`#ha-not-applied-list tr[data-version="${lost}"]`).waitFor();
  await fact(a, "sync", "in sync");
  await shot(a, "a-not-applied");
  await tab(a, "status");
  await a.locator("#ha-banner").waitFor({ state: "visible" });
  const back = await a.locator("#ha-active-link").getAttribute("href");
  if (back !== baseB) throw new Error(`A's banner links to ${back}, not ${baseB}`);
  await memberButtons(a, true);
  await role(b, "active");

  // A made active again from its page, through the link: the roles swap.
  await tab(a, "system");
  await a.locator("#ha-failover").waitFor({ state: "visible" });
  if (await a.locator("#ha-force-label").isVisible()) throw new Error("force offered while the link is up");
  await a.click("#ha-failover");
  await fact(a, "role", "active");
  await role(a, "active");
  await role(b, "standby");
  await tab(b, "status");
  await b.locator("#ha-banner").waitFor({ state: "visible" });
  await memberButtons(b, true);
  await tab(a, "status");
  await memberButtons(a, false);
  await shot(a, "a-active-again");
  await shot(b, "b-standby-again");

  // Unpaired from B: both single again. After the swap the link is made
  // again; unpairing before it is up would rightly say the peer was not told.
  await tab(b, "system");
  await fact(b, "link", "up");
  await b.click("#ha-unpair");
  await b.locator("#ha-unpaired").waitFor({ state: "visible" });
  await role(b, "standalone");
  await role(a, "standalone");
  await memberButtons(a, false);
  await tab(b, "status");
  await memberButtons(b, false);
  if (await b.locator("#ha-banner").isVisible()) throw new Error("the banner stays after unpairing");
  await shot(b, "b-unpaired");
});
