// Roles in the browser: the admin adds an operator on the Users page; the
// operator logs in, drains a member, cannot open the configuration editor
// (nor the Users page), and finds the drain, by them, in the Audit log.
// Usage: node roles.mjs BASE_URL ARTIFACT_DIR
import { logIn, newPage, password, run, setUpAndLogIn } from "./harness.mjs";

const [base, artifacts] = process.argv.slice(2);
const operatorPassword = "operator password 1";

await run(artifacts, 90_000, async (browser, shot) => {
  const page = await newPage(browser);
  page.on("dialog", (dialog) => dialog.accept());
  await setUpAndLogIn(page, base);

  // The admin adds an operator.
  await page.click("#tabs button[data-tab=users]");
  await page.locator("#users-table tr[data-user=admin]").waitFor();
  await page.fill("#user-add input[name=username]", "ops");
  await page.fill("#user-add input[name=password]", operatorPassword);
  await page.selectOption("#user-add select[name=role]", "operator");
  await page.click("#user-add button[type=submit]");
  const row = page.locator("#users-table tr[data-user=ops]");
  await row.waitFor();
  if (await row.locator("select[data-field=role]").inputValue() !== "operator") throw new Error("ops is not an operator");
  await shot(page, "users");
  await page.click("#logout");

  // The operator logs in: no configuration editor, no users page.
  await logIn(page, "ops", operatorPassword);
  await page.locator("#who-role", { hasText: "operator" }).waitFor();
  for (const tab of ["config", "users"]) {
    if (await page.locator(`#tabs button[data-tab=${tab}]`).isVisible()) throw new Error(`the ${tab} tab is shown to an operator`);
  }
  // Even asked to directly, the page does not open the editor.
  await page.evaluate(() => selectTab("config"));
  if (await page.locator("[data-panel=config]").isVisible()) throw new Error("the config editor opened for an operator");
  if (!(await page.locator("[data-panel=status]").isVisible())) throw new Error("the status page went away");
  // And the appliance refuses a config change from this session whatever the page does.
  const refused = await page.evaluate(async () => (await api("PUT", "/api/v1/config", {})).status);
  if (refused !== 403) throw new Error(`config PUT as operator answered ${refused}`);

  // The System page still lets the operator change their own password, and
  // nothing else.
  await page.click("#tabs button[data-tab=system]");
  await page.locator("#password-form").waitFor({ state: "visible" });
  for (const form of ["certificate-form", "licence-form", "upgrade-form"]) {
    if (await page.locator(`#${form}`).isVisible()) throw new Error(`${form} is shown to an operator`);
  }
  await page.click("#tabs button[data-tab=status]");

  // The operator drains a member.
  const fe01 = page.locator("tr[data-member=fe01]");
  await fe01.locator("button[data-action=drain]").click();
  await page.locator("tr[data-member=fe01][data-admin-state=draining]").waitFor();
  await shot(page, "operator-drained");

  // The audit log has it, by the operator, through the UI.
  await page.click("#tabs button[data-tab=audit]");
  const entry = page.locator("#audit-table tr[data-kind=member][data-user=ops]");
  await entry.waitFor();
  const text = await entry.textContent();
  for (const words of ["operator", "127.0.0.1", "ui", "/members/fe01/drain"]) {
    if (!text.includes(words)) throw new Error(`audit entry lacks ${words}: ${text}`);
  }
  const time = await entry.locator("time").textContent();
  if (!/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(time)) throw new Error(`audit time not local: ${time}`);
  await shot(page, "audit");
});
