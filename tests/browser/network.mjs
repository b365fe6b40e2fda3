// System → Network in headless Chromium: the host's interfaces as
// observed; a VLAN id out of range shown next to its field with nothing
// applied; host name and an NTP server edited, previewed, applied, counted
// down and confirmed; a change confirmed by itself on arrival at the
// (new) address after logging in there, and where the page would go for a
// change that moves the address it came in on; a change left unconfirmed,
// reverted by itself when its countdown runs out. Last, the same arrival
// for a move of the admin listener (imported on the Configuration tab):
// the page links to the new port, and confirms the move there.
// Usage: node network.mjs BASE_URL ARTIFACT_DIR WINDOW_S
// (the appliance is set up with the harness's password, and runs with
// `--confirm-timeout-s WINDOW_S`).
import { createServer } from "node:net";
import { newPage, password, run } from "./harness.mjs";

const [base, artifacts, windowArg] = process.argv.slice(2);
const windowS = Number(windowArg);

async function login(page, url) {
  await page.goto(url);
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-form input[name=password]", password);
  await page.click("#login-form button");
  await page.locator("#dashboard").waitFor({ state: "visible" });
}

const field = (page, path) => page.locator(`#network-form [data-path="${path}"]`);
// What the API says, with the page's session.
const view = async (page) => (await page.request.get(`${base}api/v1/system/network`)).json();

// A loopback port nothing listens on now.
const freePort = () => new Promise((resolve, reject) => {
  const server = createServer();
  server.on("error", reject);
  server.listen(0, "127.0.0.1", () => { const { port } = server.address(); server.close(() => resolve(port)); });
});

async function openEditor(page) {
  const open = await page.locator("#network-edit").getAttribute("open");
  if (open === null) await page.click("#network-edit summary");
  await field(page, "hostname").waitFor();
}

await run(artifacts, 90_000 + 2 * windowS * 1000, async (browser, shot) => {
  const page = await newPage(browser);
  await login(page, base);
  await page.click("#tabs button[data-tab=system]");

  // What the host has: loopback up with its address, the facts.
  const lo = page.locator("#network-interfaces tr[data-interface=lo]");
  await lo.locator("[data-addresses]", { hasText: "127.0.0.1/8" }).waitFor();
  const state = await lo.locator("[data-state]").getAttribute("data-state");
  if (!["up", "unknown"].includes(state)) throw new Error(`lo is ${state}`);
  for (const fact of ["hostname", "timezone", "resolvers", "ntp"]) {
    await page.locator(`#network-facts [data-fact=${fact}]`).waitFor();
  }
  if (await page.locator("#network-pending").isVisible()) throw new Error("a change shown as pending at start");
  await shot(page, "network-observed");

  // A VLAN id out of range: named next to its field, nothing applied.
  await openEditor(page);
  await page.click('#network-form [data-add="interfaces"]');
  await field(page, "interfaces[0].name").fill("eth1");
  await field(page, "interfaces[0].addresses").fill("198.51.100.10/24");
  await page.click('#network-form [data-add="interfaces[0].vlans"]');
  await field(page, "interfaces[0].vlans[0].id").fill("5000");
  await page.click("#network-apply");
  await page.locator('#network-form .field-error[data-error-for="interfaces[0].vlans[0].id"]', { hasText: "1–4094" }).waitFor();
  await page.locator("#network-errors li", { hasText: "Nothing was applied" }).waitFor();
  if (await page.locator("#network-pending").isVisible()) throw new Error("a refused change shown as pending");
  if ((await view(page)).pending !== null) throw new Error("a refused change is pending");
  await shot(page, "network-field-error");
  await page.click("#network-reset");
  await field(page, "interfaces[0].name").waitFor({ state: "detached" });
  if (await page.locator("#network-form .field-error").count()) throw new Error("field errors stay after discarding");

  // Host name and an NTP server: previewed, applied, counted down, confirmed.
  await field(page, "hostname").fill("lb-ui");
  await field(page, "ntp_servers").fill("192.0.2.123, ntp.contoso.test");
  await page.click("#network-preview-button");
  await page.locator("#network-changes li", { hasText: 'hostname: "lb-ui"' }).waitFor();
  await page.locator("#network-changes li", { hasText: "ntp_servers" }).waitFor();
  if ((await view(page)).pending !== null) throw new Error("a preview applied something");
  await shot(page, "network-preview");
  await page.click("#network-apply");
  const pendingBox = page.locator("#network-pending");
  await pendingBox.waitFor({ state: "visible" });
  await pendingBox.locator("li", { hasText: "hostname" }).waitFor();
  const countdown = page.locator("#network-countdown");
  const first = Number(await countdown.getAttribute("data-remaining"));
  if (!(first > 0 && first <= windowS)) throw new Error(`countdown starts at ${first} s of ${windowS} s`);
  await page.waitForFunction((start) => Number(document.getElementById("network-countdown").dataset.remaining) < start, first);
  if (!/^\d+:\d\d$/.test(await countdown.textContent())) throw new Error(`countdown reads ${await countdown.textContent()}`);
  await shot(page, "network-countdown");
  await page.click("#network-confirm");
  await page.locator("#network-result[data-outcome=confirmed]").waitFor();
  await pendingBox.waitFor({ state: "hidden" });
  await page.locator("#network-facts [data-fact=configured_hostname]", { hasText: "lb-ui" }).waitFor();
  await page.locator("#network-facts [data-fact=ntp_servers]", { hasText: "192.0.2.123" }).waitFor();
  if ((await view(page)).pending !== null) throw new Error("still pending after the confirmation");
  await shot(page, "network-confirmed");

  // Where the page goes when a change moves the address it came in on
  // (the page's own address, its interface and the new settings).
  const origins = await page.evaluate(() => {
    const mac = "52:54:00:12:34:56";
    const observed = { observed: { interfaces: [
      { name: "eth1", mac, addresses: ["198.51.100.10/24", "2001:db8::10/64"] },
      { name: "eth1.100", mac, addresses: ["203.0.113.10/24"] }] } };
    const change = (interfaces) => ({ settings: { interfaces } });
    const at = (hostname) => ({ protocol: "https:", hostname, port: "8443" });
    const eth1 = (more) => ({ name: "eth1", dhcp4: false, slaac: true, addresses: [], vlans: [], ...more });
    return {
      byName: movedOrigin(observed, change([eth1({ addresses: ["198.51.100.20/24"] })]), at("198.51.100.10")),
      byMac: movedOrigin(observed, change([eth1({ name: null, mac: mac.toUpperCase(), addresses: ["198.51.100.30/24"] })]), at("198.51.100.10")),
      stays: movedOrigin(observed, change([eth1({ addresses: ["198.51.100.10/24", "198.51.100.20/24"] })]), at("198.51.100.10")),
      dhcp: movedOrigin(observed, change([eth1({ dhcp4: true, addresses: ["198.51.100.20/24"] })]), at("198.51.100.10")),
      vlan: movedOrigin(observed, change([eth1({ vlans: [{ id: 100, dhcp4: false, slaac: true, addresses: ["203.0.113.20/24"] }] })]), at("203.0.113.10")),
      v6: movedOrigin(observed, change([eth1({ addresses: ["198.51.100.10/24", "2001:db8::20/64"] })]), at("[2001:db8::10]")),
      untouched: movedOrigin(observed, change([]), at("198.51.100.10")),
      name: movedOrigin(observed, change([eth1({ addresses: ["198.51.100.20/24"] })]), at("lb.contoso.test")),
    };
  });
  const expected = {
    byName: "https://198.51.100.20:8443", byMac: "https://198.51.100.30:8443", stays: undefined, dhcp: null,
    vlan: "https://203.0.113.20:8443", v6: "https://[2001:db8::20]:8443", untouched: undefined, name: null,
  };
  for (const [what, origin] of Object.entries(expected)) {
    if (origins[what] !== origin) throw new Error(`moved origin ${what}: ${origins[what]}, not ${origin}`);
  }

  // Arriving at the address with the change's fragment: the session does
  // not follow there, so log in, and the page confirms by itself.
  await openEditor(page);
  await field(page, "hostname").fill("lb-moved");
  await page.click("#network-apply");
  await pendingBox.waitFor({ state: "visible" });
  const id = await pendingBox.getAttribute("data-change");
  const arrival = await newPage(browser);
  await login(arrival, `${base}#confirm=network:${id}`);
  await arrival.locator("#network-result[data-outcome=confirmed]", { hasText: "from the new address" }).waitFor();
  if (new URL(arrival.url()).hash) throw new Error(`the fragment stays: ${arrival.url()}`);
  await arrival.locator("#network-facts [data-fact=configured_hostname]", { hasText: "lb-moved" }).waitFor();
  await shot(arrival, "network-confirmed-on-arrival");
  // The first page sees it kept, and its countdown goes.
  await page.locator("#network-result[data-outcome=confirmed]", { hasText: "another page" }).waitFor();
  await pendingBox.waitFor({ state: "hidden" });
  await arrival.context().close();

  // Left unconfirmed: the countdown runs out, the page says it was
  // reverted and shows the previous settings again.
  await openEditor(page);
  await field(page, "hostname").fill("lb-unconfirmed");
  await page.click("#network-apply");
  await pendingBox.waitFor({ state: "visible" });
  await page.locator("#network-facts [data-fact=configured_hostname]", { hasText: "lb-moved" }).waitFor();
  await page.locator("#network-result[data-outcome=reverted]").waitFor({ timeout: (windowS + 15) * 1000 });
  await pendingBox.waitFor({ state: "hidden" });
  await page.locator("#network-facts [data-fact=configured_hostname]", { hasText: "lb-moved" }).waitFor();
  if ((await view(page)).pending !== null) throw new Error("still pending after the revert");
  await shot(page, "network-reverted");

  // The admin listener moves to another port: the Apply answer links to
  // it, and the page there (the cookie follows: same host) confirms.
  const port = await freePort();
  const toml = (await (await page.request.get(`${base}api/v1/config/export`)).text())
    .replace(/^admin = "[^"]*"/m, `admin = "127.0.0.1:${port}"`);
  if (!toml.includes(`127.0.0.1:${port}`)) throw new Error("no admin address in the export");
  await page.click("#tabs button[data-tab=config]");
  await page.fill("#import-form textarea[name=toml]", toml);
  await page.click("#import-form button");
  await page.locator("#preview-summary li.warn", { hasText: "admin address moves" }).waitFor();
  await page.click("#preview-apply");
  const adminLink = page.locator("#admin-handover-link");
  await adminLink.waitFor();
  const adminHref = await adminLink.getAttribute("href");
  if (adminHref !== `https://127.0.0.1:${port}/#confirm=admin`) throw new Error(`the page links to ${adminHref}`);
  await shot(page, "admin-move-applied");
  await adminLink.click();
  await page.locator("#config-confirmed[data-confirmed=true]", { hasText: `admin address 127.0.0.1:${port} is confirmed` }).waitFor();
  if (new URL(page.url()).hash) throw new Error(`the fragment stays: ${page.url()}`);
  await shot(page, "admin-move-confirmed");
});
