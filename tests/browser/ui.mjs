// Drives the poolgate web UI in headless Chromium through the acceptance
// flow: first-boot password, login, three green members, one stopped (red
// with a reason), another drained to "ready to take offline" and enabled,
// registrar lookup, config edits with field errors, export and import with
// a diff preview, the event log (filters, paging, time range, export), the
// system page and licence, a firmware upgrade (refused, checked, installed,
// then scheduled), a password change, logout.
// Usage: node ui.mjs BASE_URL ARTIFACT_DIR [LICENCE_FILE] [CONTROL_DIR]
// with UPGRADE_BUNDLE and UPGRADE_TAMPERED naming a good and a tampered
// bundle the appliance's test upgrade key signed, and UPGRADE_VERSION the
// good one's version.
import { readFileSync, writeFileSync } from "node:fs";
import { newPage, password, run } from "./harness.mjs";

const [base, artifacts, licenceFile, controlDir] = process.argv.slice(2);
const tab = (page, name) => page.click(`#tabs button[data-tab=${name}]`);

await run(artifacts, 180_000, async (browser, shot) => {
  const page = await newPage(browser, { acceptDownloads: true });
  page.on("dialog", (dialog) => dialog.accept());

  // First boot: set the password, then log in (a wrong password first).
  await page.goto(base);
  await page.locator("#setup").waitFor({ state: "visible" });
  await shot(page, "setup");
  for (const hidden of ["#tabs", "#dashboard", "#setup-code-label"]) {
    if (await page.locator(hidden).isVisible()) throw new Error(`${hidden} shown on the first-boot page`);
  }
  await page.fill("#setup-form input[name=password]", password);
  await page.fill("#setup-form input[name=repeat]", password);
  await page.click("#setup-form button");

  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-form input[name=password]", "not the password");
  await page.click("#login-form button");
  await page.locator("#login-error", { hasText: "Wrong user or password" }).waitFor();
  await page.fill("#login-form input[name=password]", password);
  await page.click("#login-form button");

  // The dashboard: three members, all green.
  await page.locator("#dashboard").waitFor({ state: "visible" });
  const members = page.locator("table[data-pool=pool01] tbody tr");
  await members.nth(2).waitFor();
  if (await members.count() !== 3) throw new Error(`expected 3 members, saw ${await members.count()}`);
  for (const member of ["fe01", "fe02", "fe03"]) {
    await page.locator(`tr[data-member=${member}] [data-monitor=fe-sip][data-state=up]`).waitFor();
  }
  await page.locator("tr[data-member=fe01] svg.chart polyline").waitFor({ state: "attached" });
  await shot(page, "all-green");

  // One simulated Front End is stopped: it turns red with a reason.
  if (controlDir) {
    writeFileSync(`${controlDir}/stop-fe03`, "");
    await page.locator("tr[data-member=fe03] [data-monitor=fe-sip][data-state=down] .reason").waitFor({ timeout: 20_000 });
    await shot(page, "fe03-down");
  }

  // Another is drained until it is ready to take offline, then enabled.
  await page.locator("tr[data-member=fe02] button[data-action=drain]").click();
  await page.locator("tr[data-member=fe02][data-admin-state=draining] td[data-drain=drained]", { hasText: "ready to take offline" }).waitFor();
  // The committed change arrives on the live stream and is named.
  await page.locator("#last-change", { hasText: "pool01/fe02 becomes draining" }).waitFor();
  await shot(page, "drained");
  await tab(page, "events");
  await page.locator("#events-table tbody tr", { hasText: "ready to take offline" }).waitFor();
  await tab(page, "status");
  await page.locator("tr[data-member=fe02] button[data-action=enable]").click();
  await page.locator("tr[data-member=fe02][data-admin-state=enabled]").waitFor();
  await shot(page, "enabled");

  // Registrar lookup: a home server and the order the user registers in.
  await page.fill("#registrar-form input[name=uri]", "sip:Alice@contoso.test");
  await page.click("#registrar-form button");
  await page.locator("#registrar-result [data-home]").waitFor();
  const sequence = await page.locator("#registrar-sequence li").allTextContents();
  if (sequence.length !== 2 || sequence.includes("fe03")) throw new Error(`registrar sequence ${sequence} (fe03 is down)`);
  await shot(page, "registrar");

  // Config editor: a bad address is refused next to its field, nothing changes;
  // a good edit shows its diff and applies.
  await tab(page, "config");
  const address = page.locator('#config-form [data-path="pool[0].member[0].address"]');
  await address.waitFor();
  await address.fill("300.1.1.1");
  await page.click("#config-review");
  await page.locator('#config-form .field-error[data-error-for="pool[0].member[0].address"]').waitFor();
  await shot(page, "config-field-error");
  await address.fill("127.0.0.11");
  await page.locator('#config-form [data-path="dns.ttl"]').fill("20");
  await tab(page, "status");
  await tab(page, "config");
  if (await page.locator('#config-form [data-path="dns.ttl"]').inputValue() !== "20") throw new Error("edits lost on a tab switch");
  await page.click("#config-review");
  await page.locator("#preview-diff .added", { hasText: "ttl = 20" }).waitFor();
  await page.locator("#preview-diff .removed", { hasText: "ttl = 30" }).waitFor();
  await shot(page, "config-preview");
  await page.click("#preview-apply");
  await page.locator("#config-version[data-applied='2']").waitFor();

  // Export, change, import: the preview shows the change, apply commits it.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#config-export")]);
  const exported = readFileSync(await download.path(), "utf8");
  if (!exported.includes("ttl = 20") || !exported.includes("[[pool.member]]")) throw new Error(`export:\n${exported}`);
  writeFileSync(`${artifacts}/exported.toml`, exported);
  const imported = `${artifacts}/imported.toml`;
  writeFileSync(imported, exported.replace("ttl = 20", "ttl = 25"));
  await page.setInputFiles("#import-form input[type=file]", imported);
  await page.click("#import-form button[type=submit]");
  await page.locator("#preview-diff .added", { hasText: "ttl = 25" }).waitFor();
  await shot(page, "import-preview");
  await page.click("#preview-apply");
  await page.locator("#config-version[data-applied='3']").waitFor();
  if (await page.locator('#config-form [data-path="dns.ttl"]').inputValue() !== "25") throw new Error("import not applied");
  // A broken import names the line.
  await page.fill("#import-form textarea", exported.replace('address = "127.0.0.12"', 'address = "nowhere"'));
  await page.click("#import-form button[type=submit]");
  await page.locator("#import-errors li", { hasText: "pool[0].member[1].address" }).waitFor();
  await page.locator("#import-errors li", { hasText: "line" }).waitFor();
  await shot(page, "import-error");

  // Event filters: a table of time, kind, pool, member and message.
  await tab(page, "events");
  const headings = await page.locator("#events-table thead th").allTextContents();
  if (headings.join() !== "Time,Kind,Pool,Member,Message") throw new Error(`event columns ${headings}`);
  await page.selectOption("#events-filter select[name=kind]", "config");
  await page.locator("#events-table tr[data-kind=config]", { hasText: "Config version 3 committed" }).waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll("#events-table tbody tr")].every((tr) => tr.dataset.kind === "config"));
  await shot(page, "events-config");
  await page.selectOption("#events-filter select[name=kind]", "");
  await page.fill("#events-filter input[name=member]", "fe02");
  await page.click("#events-filter button[type=submit]");
  await page.locator("#events-table tr[data-kind=drain]", { hasText: "ready to take offline" }).waitFor();
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#events-table tbody tr")];
    return rows.length > 0 && rows.every((tr) => tr.cells[3].textContent === "fe02");
  });
  const time = await page.locator("#events-table tbody tr td:first-child time").first();
  if (!/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(await time.textContent())) throw new Error(`event time not local: ${await time.textContent()}`);
  if (Number.isNaN(Date.parse(await time.getAttribute("datetime")))) throw new Error("an event time without its datetime");

  // Paging: 60 admin actions on fe01 are more than a page of 50, newest first.
  const acted = await page.evaluate(async () => {
    for (let i = 0; i < 30; i++) {
      for (const action of ["disable", "enable"]) {
        const { status } = await api("POST", `/api/v1/pools/pool01/members/fe01/${action}`, {});
        if (status !== 200) return `${action}: ${status}`;
      }
    }
    return "done";
  });
  if (acted !== "done") throw new Error(`member actions: ${acted}`);
  await page.selectOption("#events-filter select[name=kind]", "admin");
  await page.fill("#events-filter input[name=pool]", "pool01");
  await page.fill("#events-filter input[name=member]", "fe01");
  await page.click("#events-filter button[type=submit]");
  const eventIds = () => page.locator("#events-table tbody tr").evaluateAll((rows) => rows.map((tr) => Number(tr.dataset.id)));
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#events-table tbody tr")];
    return rows.length === 50 && rows.every((tr) => tr.dataset.kind === "admin" && tr.cells[2].textContent === "pool01" && tr.cells[3].textContent === "fe01");
  });
  await page.locator("#events-older").waitFor({ state: "visible" });
  if (await page.locator("#events-newer").isVisible()) throw new Error("Newer shown on the newest page");
  const newest = await eventIds();
  if (!newest.every((id, i) => i === 0 || id < newest[i - 1])) throw new Error(`not newest first: ${newest}`);
  await shot(page, "events-page-1");
  await page.click("#events-older");
  await page.locator("#events-newer").waitFor({ state: "visible" });
  await page.waitForFunction((last) => {
    const rows = [...document.querySelectorAll("#events-table tbody tr")];
    return rows.length > 0 && Number(rows[0].dataset.id) < last;
  }, newest[49]);
  const older = await eventIds();
  if (older.length < 10 || older.length >= 50) throw new Error(`second page of ${older.length}`);
  if (await page.locator("#events-older").isVisible()) throw new Error("Older shown on the last page");
  await shot(page, "events-page-2");
  await page.click("#events-newer");
  await page.locator("#events-newer").waitFor({ state: "hidden" });
  await page.waitForFunction((first) => Number(document.querySelector("#events-table tbody tr")?.dataset.id) === first, newest[0]);

  // The export links carry the filter: the CSV has its header and the same events.
  const csvHref = await page.getAttribute("#events-csv", "href");
  for (const part of ["format=csv", "kind=admin", "pool=pool01", "member=fe01"]) {
    if (!csvHref.includes(part)) throw new Error(`CSV link ${csvHref} lacks ${part}`);
  }
  const fetched = (href) => page.evaluate(async (url) => {
    const response = await fetch(url, { credentials: "same-origin" });
    return { status: response.status, type: response.headers.get("content-type"), text: await response.text() };
  }, href);
  const csv = await fetched(csvHref);
  if (csv.status !== 200 || !csv.type.startsWith("text/csv")) throw new Error(`CSV export: ${csv.status} ${csv.type}`);
  const lines = csv.text.split("\r\n").filter((line) => line);
  if (lines[0] !== "id,at,kind,pool,member,message,detail") throw new Error(`CSV header: ${lines[0]}`);
  if (lines.length - 1 !== newest.length + older.length) throw new Error(`CSV of ${lines.length - 1} events, the pages showed ${newest.length + older.length}`);
  if (!lines.slice(1).every((line) => line.includes(",admin,pool01,fe01,"))) throw new Error(`CSV not filtered:\n${csv.text}`);
  if (!lines[1].startsWith(`${newest[0]},`)) throw new Error(`CSV not newest first: ${lines[1]}`);
  const json = JSON.parse((await fetched(await page.getAttribute("#events-json", "href"))).text);
  if (json.events.length !== lines.length - 1 || json.events.some((e) => e.kind !== "admin")) throw new Error("JSON export differs from the CSV");

  // A time range: from tomorrow, nothing; from an hour ago, the actions again.
  const localInput = (date) => new Date(date.getTime() - date.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
  await page.fill("#events-filter input[name=since]", localInput(new Date(Date.now() + 86_400_000)));
  await page.click("#events-filter button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#events-table tbody tr").length === 0);
  if (!(await page.getAttribute("#events-csv", "href")).includes("since=")) throw new Error("the CSV link lacks the time range");
  if (await page.locator("#events-older").isVisible()) throw new Error("Older shown for an empty range");
  await page.fill("#events-filter input[name=since]", localInput(new Date(Date.now() - 3_600_000)));
  await page.fill("#events-filter input[name=until]", localInput(new Date(Date.now() + 3_600_000)));
  await page.click("#events-filter button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#events-table tbody tr").length === 50);
  await shot(page, "events-range");
  for (const field of ["pool", "member", "since", "until"]) await page.fill(`#events-filter input[name=${field}]`, "");
  await page.selectOption("#events-filter select[name=kind]", "");
  await page.click("#events-filter button[type=submit]");

  // System page: version, certificate; licence refused then installed.
  await tab(page, "system");
  await page.locator("#system-info [data-fact=version]").waitFor();
  await page.locator("#certificate-info [data-fact=fingerprint]").waitFor();
  await page.fill("#certificate-form textarea[name=certificate]", "not a certificate");
  await page.fill("#certificate-form textarea[name=key]", "not a key");
  await page.click("#certificate-form button[type=submit]");
  await page.locator("#certificate-error", { hasText: "certificate" }).waitFor();
  // CA bundles: garbage is refused with the reason; a CA uploads, is listed, deletes.
  if (process.env.CA_BUNDLE_FILE) {
    await page.fill("#ca-bundle-form input[name=name]", "contoso");
    await page.fill("#ca-bundle-form textarea[name=pem]", "not a certificate");
    await page.click("#ca-bundle-form button[type=submit]");
    await page.locator("#ca-bundle-error", { hasText: "no PEM certificate" }).waitFor();
    await page.fill("#ca-bundle-form input[name=name]", "contoso");
    await page.setInputFiles("#ca-bundle-form input[name=pem_file]", process.env.CA_BUNDLE_FILE);
    await page.waitForFunction(() => document.querySelector("#ca-bundle-form textarea[name=pem]").value.includes("BEGIN CERTIFICATE"));
    await page.click("#ca-bundle-form button[type=submit]");
    await page.locator("#ca-bundle-list tr[data-bundle=contoso]", { hasText: "CN=Contoso UI Root CA" }).waitFor();
    if (await page.locator("#ca-bundle-error").textContent()) throw new Error("a CA bundle upload left an error shown");
    await page.locator("#ca-bundles").scrollIntoViewIfNeeded();
    await shot(page, "ca-bundles");
    await page.click("#ca-bundle-list tr[data-bundle=contoso] button");
    await page.locator("#ca-bundle-list tr[data-bundle=contoso]").waitFor({ state: "detached" });
  }
  // Remote syslog and SNMP: a field error is shown with its field; a UDP
  // collector on loopback (nothing listens: datagrams only) is saved,
  // listed and turned off again.
  await page.locator("#syslog-servers tbody", { hasText: "Remote syslog is off." }).waitFor();
  await page.fill("#syslog-form textarea", JSON.stringify({ servers: [{ host: "127.0.0.1", transport: "tcp+tls", ca_bundle: "nowhere" }] }));
  await page.click("#syslog-form button[type=submit]");
  await page.locator("#syslog-error", { hasText: "servers[0].ca_bundle" }).waitFor();
  await page.fill("#syslog-form textarea", JSON.stringify({ servers: [{ host: "127.0.0.1", port: 9, transport: "udp" }] }));
  await page.click("#syslog-form button[type=submit]");
  await page.locator("#syslog-servers tr[data-server='127.0.0.1:9/udp']").waitFor();
  await page.fill("#snmp-form textarea", JSON.stringify({ users: [{ name: "nms", auth_password: "short", priv_password: "long-enough-1" }] }));
  await page.click("#snmp-form button[type=submit]");
  await page.locator("#snmp-error", { hasText: "users[0].auth_password" }).waitFor();
  await page.locator("#syslog").scrollIntoViewIfNeeded();
  await shot(page, "syslog-snmp");
  await page.click("#syslog-off");
  await page.locator("#syslog-servers tbody", { hasText: "Remote syslog is off." }).waitFor();
  await page.locator("#licence-status[data-state=evaluation]").waitFor();
  await page.fill("#licence-form textarea", "PGLIC1.damaged");
  await page.click("#licence-form button");
  await page.locator("#licence-error", { hasText: "damaged" }).waitFor();
  if (licenceFile) {
    await page.fill("#licence-form textarea", readFileSync(licenceFile, "utf8"));
    await page.click("#licence-form button");
    await page.locator("#licence-status[data-state=licensed]").waitFor();
  }
  await shot(page, "system");

  // Password: a wrong current password is refused; a change (and back) keeps
  // this session logged in.
  const changePassword = async (from, to) => {
    await page.fill("#password-form input[name=current_password]", from);
    await page.fill("#password-form input[name=new_password]", to);
    await page.fill("#password-form input[name=repeat]", to);
    await page.click("#password-form button");
  };
  await changePassword("not the password", "another password 1");
  await page.locator("#password-error", { hasText: "current password is wrong" }).waitFor();
  await changePassword(password, "another password 1");
  await page.locator("#password-done").waitFor({ state: "visible" });
  await changePassword("another password 1", password);
  await page.locator("#password-done").waitFor({ state: "visible" });
  if (await page.locator("#password-error").textContent()) throw new Error("a password change left an error shown");

  // Firmware upgrade on the fake disk: a tampered bundle is refused with its
  // reason, the good one passes "Check only", then installs to start at a
  // restart the admin chooses; the page then shows it waiting.
  const [goodBundle, tamperedBundle, next] = [process.env.UPGRADE_BUNDLE, process.env.UPGRADE_TAMPERED, process.env.UPGRADE_VERSION];
  if (goodBundle && tamperedBundle && next) {
    await page.locator("#system-info [data-fact=slot]", { hasText: "root-a" }).waitFor();
    await page.setInputFiles("#upgrade-form input[name=bundle]", tamperedBundle);
    await page.check("#upgrade-form input[name=reboot][value=later]");
    await page.click("#upgrade-install");
    await page.locator("#upgrade-result[data-outcome=refused] #upgrade-refusal", { hasText: "does not match" }).waitFor();
    await page.locator("#upgrade-progress[data-state=failed]").waitFor();
    if (await page.locator("#upgrade-bar").evaluate((bar) => bar.value) !== 100) throw new Error("upload progress did not reach 100 %");
    if (await page.locator("#system-info [data-fact=pending_upgrade]").count()) throw new Error("a refused bundle left an upgrade pending");
    await shot(page, "upgrade-refused");

    // On a slow link (1 MB/s up) the bar shows the bytes sent as they go.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions",
      { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 1 << 20 });
    // An install cancelled halfway writes nothing.
    await page.setInputFiles("#upgrade-form input[name=bundle]", goodBundle);
    await page.click("#upgrade-install");
    await page.locator("#upgrade-progress[data-state=uploading] #upgrade-sent", { hasText: /MB of [\d.]+ MB/ }).waitFor();
    await page.click("#upgrade-cancel");
    await page.locator("#upgrade-result[data-outcome=refused] #upgrade-refusal", { hasText: "cancelled; nothing was written" }).waitFor();
    await page.locator("#upgrade-install:enabled").waitFor();
    if (await page.locator("#system-info [data-fact=pending_upgrade]").count()) throw new Error("a cancelled upload left an upgrade pending");
    await page.setInputFiles("#upgrade-form input[name=bundle]", goodBundle);
    await page.click("#upgrade-check");
    await page.locator("#upgrade-progress[data-state=uploading] #upgrade-sent", { hasText: /MB of [\d.]+ MB/ }).waitFor();
    const partway = await page.locator("#upgrade-bar").evaluate((bar) => bar.value);
    if (!(partway > 0 && partway < 100)) throw new Error(`progress bar at ${partway} % while uploading`);
    await shot(page, "upgrade-uploading");
    await page.locator("#upgrade-result[data-outcome=verified] #upgrade-steps", { hasText: `poolgate ${next}` }).waitFor();
    await page.locator("#upgrade-steps", { hasText: "slot root-b" }).waitFor();
    await page.locator("#upgrade-sent", { hasText: "Checked" }).waitFor();
    if (await page.locator("#upgrade-refusal").isVisible()) throw new Error("the earlier refusal is still shown");
    await shot(page, "upgrade-verified");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

    await page.check("#upgrade-form input[name=reboot][value=later]");
    await page.click("#upgrade-install");
    await page.locator("#upgrade-result[data-outcome=installed] #upgrade-steps", { hasText: "Restart the appliance when it suits you" }).waitFor();
    await page.locator("#system-info [data-fact=pending_upgrade]", { hasText: `${next} is installed in slot root-b` }).waitFor();
    await page.locator("#upgrade-pending", { hasText: "starts at the next restart" }).waitFor({ state: "visible" });
    await shot(page, "upgrade-installed");

    // Installing it again to restart at a time, once connections end: a
    // time that has passed is refused on the page, a coming one scheduled.
    const local = (date) => new Date(date.getTime() - date.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
    await page.setInputFiles("#upgrade-form input[name=bundle]", goodBundle);
    await page.check("#upgrade-form input[name=reboot][value=at]");
    await page.fill("#upgrade-form input[name=at]", local(new Date(Date.now() - 3_600_000)));
    await page.check("#upgrade-form input[name=drain]");
    await page.fill("#upgrade-form input[name=drain_timeout_s]", "300");
    await page.click("#upgrade-install");
    await page.locator("#upgrade-refusal", { hasText: "has passed" }).waitFor();
    await page.fill("#upgrade-form input[name=at]", local(new Date(Date.now() + 3_600_000)));
    await page.click("#upgrade-install");
    await page.locator("#upgrade-result[data-outcome=installed] #upgrade-steps", { hasText: "once connections through the virtual services have ended (at most 300 s)" }).waitFor();
    await page.locator("#system-info [data-fact=reboot_scheduled]", { hasText: "at most 300 s" }).waitFor();
    await page.locator("#upgrade-pending", { hasText: "Restarting at" }).waitFor();
    await shot(page, "upgrade-scheduled");

    await tab(page, "events");
    await page.selectOption("#events-filter select[name=kind]", "upgrade");
    await page.locator("#events-table tr[data-kind=upgrade]", { hasText: "refused: component root: its SHA-256 does not match" }).waitFor();
    await page.locator("#events-table tr[data-kind=upgrade]", { hasText: "installed in slot root-b" }).first().waitFor();
    await shot(page, "events-upgrade");
    await page.selectOption("#events-filter select[name=kind]", "");
  }

  await page.click("#logout");
  await page.locator("#login").waitFor({ state: "visible" });
  await shot(page, "logged-out");
});
