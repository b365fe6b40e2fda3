// A network change that moves the admin address the page came in on: the
// page names the new address, and once the old one stops answering it
// goes there by itself; the session does not follow to another address,
// so after logging in there the page confirms the change by itself.
// Usage: node network-move.mjs BASE_URL ARTIFACT_DIR NEW_ADDRESS
// inside the test's network namespace, where BASE_URL's address is on
// interface pg0 (a /24) and the appliance is not set up yet; the test
// moves pg0 to NEW_ADDRESS once poolgate has written the change.
import { newPage, password, run } from "./harness.mjs";

const [base, artifacts, newAddress] = process.argv.slice(2);
const moved = new URL(base);
moved.hostname = newAddress;
const oldAddress = new URL(base).hostname;

async function login(page) {
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-form input[name=password]", password);
  await page.click("#login-form button");
  await page.locator("#dashboard").waitFor({ state: "visible" });
}

// Chromium aborts a navigation when it sees the host's network change
// (ERR_NETWORK_CHANGED); the namespace was just made, so try a few times.
async function gotoSettled(page, url) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await page.goto(url);
    } catch (error) {
      if (attempt >= 5 || !String(error).includes("ERR_NETWORK_CHANGED")) throw error;
      await page.waitForTimeout(500);
    }
  }
}

await run(artifacts, 90_000, async (browser, shot) => {
  const page = await newPage(browser);
  await gotoSettled(page, base);
  await page.locator("#setup").waitFor({ state: "visible" });
  await page.fill("#setup-form input[name=password]", password);
  await page.fill("#setup-form input[name=repeat]", password);
  await page.click("#setup-form button");
  await login(page);

  await page.click("#tabs button[data-tab=system]");
  await page.locator("#network-interfaces tr[data-interface=pg0] [data-addresses]", { hasText: `${oldAddress}/24` }).waitFor();
  await page.click("#network-edit summary");
  await page.click('#network-form [data-add="interfaces"]');
  await page.fill('#network-form [data-path="interfaces[0].name"]', "pg0");
  await page.fill('#network-form [data-path="interfaces[0].addresses"]', `${newAddress}/24`);
  await page.click("#network-apply");
  const link = page.locator("#network-handover-link");
  await link.waitFor();
  const id = await page.locator("#network-pending").getAttribute("data-change");
  const href = await link.getAttribute("href");
  if (href !== `${moved.origin}/#confirm=network:${id}`) throw new Error(`the page would go to ${href}`);
  await shot(page, "handover");

  // The address moves: the page notices and goes to the new one.
  await page.waitForURL((url) => url.hostname === newAddress, { timeout: 45_000 });
  await shot(page, "login-at-the-new-address");
  await login(page);
  await page.locator("#network-result[data-outcome=confirmed]", { hasText: "from the new address" }).waitFor();
  await page.locator("#network-interfaces tr[data-interface=pg0] [data-addresses]", { hasText: `${newAddress}/24` }).waitFor();
  await shot(page, "confirmed-at-the-new-address");
  const view = await (await page.request.get(`${moved.origin}/api/v1/system/network`)).json();
  if (view.pending !== null) throw new Error("still pending after the confirmation");
  if (view.settings.interfaces[0].addresses[0] !== `${newAddress}/24`) throw new Error(JSON.stringify(view.settings));
});
