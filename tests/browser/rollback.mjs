// The System page after an upgrade that did not boot: poolgate runs the old
// version from slot a again and says why, and the event log has the
// rollback with its reason.
// Usage: node rollback.mjs BASE_URL ARTIFACT_DIR
import { newPage, password, run } from "./harness.mjs";

const [base, artifacts] = process.argv.slice(2);

await run(artifacts, 90_000, async (browser, shot) => {
  const page = await newPage(browser);
  await page.goto(base);
  await page.locator("#setup").waitFor({ state: "visible" });
  await page.fill("#setup-form input[name=password]", password);
  await page.fill("#setup-form input[name=repeat]", password);
  await page.click("#setup-form button");
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-form input[name=password]", password);
  await page.click("#login-form button");
  await page.locator("#dashboard").waitFor({ state: "visible" });

  await page.click("#tabs button[data-tab=system]");
  await page.locator("#system-info [data-fact=slot]", { hasText: "root-a" }).waitFor();
  const running = await page.locator("#system-info [data-fact=version]").textContent();
  const outcome = page.locator("#system-info [data-fact=last_upgrade][data-outcome=rolled_back]");
  await outcome.waitFor();
  for (const words of [`rolled back to ${running}`, "did not finish booting in 3 attempts", "database from before the upgrade was restored"]) {
    if (!(await outcome.textContent()).includes(words)) throw new Error(`last upgrade: ${await outcome.textContent()}`);
  }
  for (const fact of ["pending_upgrade", "previous_version"]) {
    if (await page.locator(`#system-info [data-fact=${fact}]`).count()) throw new Error(`${fact} shown after a rollback`);
  }
  if (await page.locator("#upgrade-pending").isVisible()) throw new Error("an upgrade shown as pending after a rollback");
  await shot(page, "system-rolled-back");

  await page.click("#tabs button[data-tab=events]");
  await page.selectOption("#events-filter select[name=kind]", "upgrade");
  await page.locator("#events-table tr[data-kind=upgrade]", { hasText: `Rolled back to ${running}` }).waitFor();
  await shot(page, "events-rollback");
});
