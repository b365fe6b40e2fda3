// Drives the poolgate web UI in headless Chromium: first-boot setup, login,
// dashboard, drain and enable, logout. Usage: node ui.mjs BASE_URL ARTIFACT_DIR
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, artifacts, licenceFile, controlDir] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const password = "correct horse battery staple";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const timeout = setTimeout(() => { console.error("browser test timed out"); process.exit(3); }, 90_000);
let step = 0;
const shot = (page, name) => page.screenshot({ path: `${artifacts}/${String(++step).padStart(2, "0")}-${name}.png`, fullPage: true });

try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on("dialog", (dialog) => dialog.accept());
  page.setDefaultTimeout(15_000);

  await page.goto(base);
  await page.locator("#setup").waitFor({ state: "visible" });
  await shot(page, "setup");
  await page.fill("#setup-form input[name=password]", password);
  await page.fill("#setup-form input[name=repeat]", password);
  await page.click("#setup-form button");

  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-form input[name=password]", "not the password");
  await page.click("#login-form button");
  await page.locator("#login-error", { hasText: "Wrong user or password" }).waitFor();
  await page.fill("#login-form input[name=password]", password);
  await page.click("#login-form button");

  await page.locator("#dashboard").waitFor({ state: "visible" });
  const members = page.locator("table[data-pool=pool01] tbody tr");
  await members.nth(2).waitFor();
  if (await members.count() !== 3) throw new Error(`expected 3 members, saw ${await members.count()}`);
  await shot(page, "dashboard");

  // Three simulated Front Ends are up; one is stopped and turns red with a reason.
  await page.locator("tr[data-member=fe03] [data-monitor=fe-sip][data-state=up]").waitFor();
  await shot(page, "all-green");
  if (controlDir) {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(`${controlDir}/stop-fe03`, "");
    await page.locator("tr[data-member=fe03] [data-monitor=fe-sip][data-state=down] .reason").waitFor({ timeout: 20_000 });
    await shot(page, "fe03-down");
  }

  // Registrar lookup.
  await page.fill("#registrar-form input[name=uri]", "sip:Alice@contoso.test");
  await page.click("#registrar-form button");
  await page.locator("#registrar-result [data-home]").waitFor();

  const fe02 = page.locator("tr[data-member=fe02]");
  await fe02.locator("button[data-action=drain]").click();
  await page.locator("tr[data-member=fe02][data-admin-state=draining] td[data-drain=drained]").waitFor();
  await shot(page, "drained");
  await page.locator("#events li", { hasText: "ready to take offline" }).waitFor();

  await page.locator("tr[data-member=fe02] button[data-action=enable]").click();
  await page.locator("tr[data-member=fe02][data-admin-state=enabled]").waitFor();
  await shot(page, "enabled");

  // Licence: a damaged one is refused with a reason, a valid one installed.
  await page.locator("#licence-status[data-state=evaluation]").waitFor();
  await page.fill("#licence-form textarea", "PGLIC1.damaged");
  await page.click("#licence-form button");
  await page.locator("#licence-error", { hasText: "damaged" }).waitFor();
  if (licenceFile) {
    const { readFileSync } = await import("node:fs");
    await page.fill("#licence-form textarea", readFileSync(licenceFile, "utf8"));
    await page.click("#licence-form button");
    await page.locator("#licence-status[data-state=licensed]").waitFor();
    await shot(page, "licensed");
  }

  await page.click("#logout");
  await page.locator("#login").waitFor({ state: "visible" });
  await shot(page, "logged-out");
  console.log("browser test passed");
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  clearTimeout(timeout);
  await browser.close();
}
