// Drives System → Backup & restore in headless Chromium: download a backup
// (passphrases that differ refused), a wrong passphrase refused on restore
// with its reason, the preview of what changes, the restore (back to the
// login, everyone logged out), log in again, and the support bundle link.
// Usage: node backup.mjs BASE_URL ARTIFACT_DIR
// The appliance is set up with the harness password and has a config.
import { readFileSync, statSync } from "node:fs";
import { newPage, password, run } from "./harness.mjs";

const [base, artifacts] = process.argv.slice(2);
const passphrase = "a passphrase for the browser";

await run(artifacts, 120_000, async (browser, shot) => {
  const page = await newPage(browser, { acceptDownloads: true });
  page.on("dialog", (dialog) => dialog.accept());
  const login = async () => {
    await page.fill("#login-form input[name=username]", "admin");
    await page.fill("#login-form input[name=password]", password);
    await page.click("#login-form button");
    await page.locator("#dashboard").waitFor({ state: "visible" });
  };
  await page.goto(base);
  await page.locator("#login").waitFor({ state: "visible" });
  await login();
  await page.click("#tabs button[data-tab=system]");
  await page.locator("#backup").waitFor({ state: "visible" });

  // Passphrases that differ make no backup.
  await page.fill("#backup-form input[name=passphrase]", passphrase);
  await page.fill("#backup-form input[name=repeat]", `${passphrase}!`);
  await page.click("#backup-form button");
  await page.locator("#backup-error", { hasText: "differ" }).waitFor();

  await page.fill("#backup-form input[name=repeat]", passphrase);
  await page.check("#backup-form input[name=network]");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#backup-form button")]);
  if (!download.suggestedFilename().endsWith(".pgbackup")) throw new Error(`downloaded ${download.suggestedFilename()}`);
  const archive = await download.path();
  if (readFileSync(archive).subarray(0, 8).toString() !== "PGBACKUP") throw new Error("not a backup archive");
  await shot(page, "backup-downloaded");

  // A wrong passphrase: refused with the reason, no preview.
  await page.setInputFiles("#restore-form input[name=archive]", archive);
  await page.fill("#restore-form input[name=passphrase]", "not the passphrase");
  await page.click("#restore-form button");
  await page.locator("#restore-error", { hasText: "wrong passphrase" }).waitFor();
  if (await page.locator("#restore-preview").isVisible()) throw new Error("a preview for a wrong passphrase");
  await shot(page, "restore-wrong-passphrase");

  // The preview, then the restore: back to the login with what happened.
  await page.fill("#restore-form input[name=passphrase]", passphrase);
  await page.click("#restore-form button");
  await page.locator("#restore-preview").waitFor({ state: "visible" });
  for (const fact of ["Config version", "Admin states", "Certificate", "Licences", "Sessions"]) {
    await page.locator("#restore-preview dt", { hasText: fact }).waitFor();
  }
  if (await page.locator("#restore-error").textContent()) throw new Error("an error beside the preview");
  await shot(page, "restore-preview");
  await page.click("#restore-apply");
  await page.locator("#login").waitFor({ state: "visible" });
  await page.locator("#login-error", { hasText: "Restored config version" }).waitFor();
  await shot(page, "restored-login");
  await login();

  // The support bundle downloads.
  await page.click("#tabs button[data-tab=system]");
  const [bundle] = await Promise.all([page.waitForEvent("download"), page.click("#support-bundle")]);
  if (!bundle.suggestedFilename().endsWith(".tar.gz")) throw new Error(`downloaded ${bundle.suggestedFilename()}`);
  if (statSync(await bundle.path()).size < 100) throw new Error("an empty support bundle");
  const head = readFileSync(await bundle.path()).subarray(0, 2);
  if (head[0] !== 0x1f || head[1] !== 0x8b) throw new Error("the support bundle is not gzip");
  await shot(page, "support-bundle");
});
