// What every browser scenario shares: Debian's Chromium started headless
// without reaching for the network, numbered full-page screenshots, a
// deadline, and on failure the page's errors and a last screenshot.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

export const password = "correct horse battery staple";

// Run `scenario(browser, shot)` within `deadlineMs`; the process exits
// non-zero if it throws, times out or a page raised an error.
export async function run(artifacts, deadlineMs, scenario) {
  mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const timeout = setTimeout(() => { console.error("browser test timed out"); process.exit(3); }, deadlineMs);
  let step = 0;
  const shot = (page, name) => page.screenshot({ path: `${artifacts}/${String(++step).padStart(2, "0")}-${name}.png`, fullPage: true });
  try {
    await scenario(browser, shot);
    if (!process.exitCode) console.log("browser test passed");
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
    for (const page of browser.contexts().flatMap((context) => context.pages())) {
      const errors = await page.locator(".error").allTextContents().catch(() => []);
      console.error("errors on the page:", errors.filter((text) => text.trim()));
      await shot(page, "failure").catch(() => {});
    }
  } finally {
    clearTimeout(timeout);
    await browser.close();
  }
}

// A new page that fails the run on any script error on it.
export async function newPage(browser, options = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, ...options });
  const page = await context.newPage();
  page.on("pageerror", (error) => { console.error("page error:", error); process.exitCode = 1; });
  page.setDefaultTimeout(15_000);
  return page;
}

// Log in on the login form as `username` and wait for the dashboard.
export async function logIn(page, username, secret) {
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-form input[name=username]", username);
  await page.fill("#login-form input[name=password]", secret);
  await page.click("#login-form button");
  await page.locator("#dashboard").waitFor({ state: "visible" });
}

// First boot: open `url`, set the admin password (`password` above) on the
// setup page, and log in as admin.
export async function setUpAndLogIn(page, url) {
  await page.goto(url);
  await page.locator("#setup").waitFor({ state: "visible" });
  await page.fill("#setup-form input[name=password]", password);
  await page.fill("#setup-form input[name=repeat]", password);
  await page.click("#setup-form button");
  await logIn(page, "admin", password);
}
