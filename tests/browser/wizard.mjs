// Builds a Skype for Business Front End pool with the "New pool from a
// template" wizard on an empty appliance (first boot): a field error comes
// back next to its member row, the preview lists exactly the zone, its name
// server, the records, the pool, the monitor and the two web VIPs, Apply
// commits it and every member turns green against the simulated Front Ends;
// a second run of the wizard is refused (the pool exists); a Director pool
// and an Edge internal pool preview what their templates make; and an
// unrelated edit in the editor leaves the mapped ports as they were.
// Usage: node wizard.mjs BASE_URL ARTIFACT_DIR MEMBER1,MEMBER2,MEMBER3 VIP_INTERNAL VIP_EXTERNAL
import { newPage, password, run, setUpAndLogIn } from "./harness.mjs";

const [base, artifacts, memberList, vipInternal, vipExternal] = process.argv.slice(2);
const members = memberList.split(",");
const tab = (page, name) => page.click(`#tabs button[data-tab=${name}]`);
const names = members.map((_, i) => `fe0${i + 1}`);

// The `+` lines of the preview as TOML blocks: [{ section, fields }].
function addedBlocks(lines) {
  const blocks = [];
  for (const line of lines) {
    const text = line.replace(/^\+ ?/, "");
    const header = text.match(/^\[\[(.+)\]\]$/);
    if (header) blocks.push({ section: header[1], fields: {} });
    else if (text.trim() && blocks.length) {
      const [key, ...value] = text.split(" = ");
      blocks[blocks.length - 1].fields[key.trim()] = value.join(" = ");
    }
  }
  return blocks;
}

function expectSame(what, seen, wanted) {
  const a = JSON.stringify([...seen].sort()), b = JSON.stringify([...wanted].sort());
  if (a !== b) throw new Error(`${what}:\n  seen   ${a}\n  wanted ${b}`);
}

await run(artifacts, 60_000, async (browser, shot) => {
  const page = await newPage(browser);

  // First boot.
  await setUpAndLogIn(page, base);

  // The wizard: a Front End pool of three members (a fourth row added and
  // removed again), the third address mistyped at first.
  await tab(page, "config");
  await page.click("#wizard-open summary");
  const wizard = page.locator("#wizard-form");
  if (await wizard.locator("[name=dns_address]").inputValue() !== "") throw new Error("no DNS listener, yet an address was prefilled");
  await page.locator("#wizard-help", { hasText: "lyncdiscoverinternal" }).waitFor();
  await wizard.locator("[name=pool_fqdn]").fill("pool01.contoso.test");
  await wizard.locator("[name=domain]").fill("contoso.test");
  await wizard.locator("[name=dns_address]").fill("127.0.0.1");
  await wizard.locator("[name=web_internal_fqdn]").fill("webint.contoso.test");
  await wizard.locator("[name=web_internal_vip]").fill(vipInternal);
  await wizard.locator("[name=web_external_fqdn]").fill("webext.contoso.test");
  await wizard.locator("[name=web_external_vip]").fill(vipExternal);
  for (let i = 0; i < members.length; i++) {
    if (i > 0) await page.click("#wizard-add-member");
    const row = page.locator(`#wizard-members tr[data-row="${i}"]`);
    await row.locator("[name=member_name]").fill(names[i]);
    await row.locator("[name=member_fqdn]").fill(`${names[i]}.contoso.test`);
    await row.locator("[name=member_address]").fill(i === 2 ? "300.1.1.1" : members[i]);
  }
  await page.click("#wizard-add-member");
  await page.click(`#wizard-members [data-remove-member="${members.length}"]`);
  if (await page.locator("#wizard-members tbody tr").count() !== members.length) throw new Error("the added row was not removed");
  await page.click("#wizard-review");
  await page.locator('#wizard-form .field-error[data-error-for="pool[0].member[2].address"]').waitFor();
  await page.locator("#wizard-errors li", { hasText: "1 field needs fixing" }).waitFor();
  await shot(page, "wizard-field-error");
  await page.locator('#wizard-members tr[data-row="2"] [name=member_address]').fill(members[2]);
  await page.click("#wizard-review");

  // The preview: exactly what the Front End template makes, nothing removed.
  await page.locator("#preview:not([hidden]) #preview-diff .added").first().waitFor();
  await shot(page, "wizard-preview");
  const removed = await page.locator("#preview-diff .removed").allTextContents();
  if (removed.length) throw new Error(`the wizard removed: ${removed}`);
  const blocks = addedBlocks(await page.locator("#preview-diff .added").allTextContents());
  const of = (section) => blocks.filter((b) => b.section === section).map((b) => b.fields);
  const zones = of("zone");
  expectSame("zones", zones.map((z) => z.name), ['"contoso.test"']);
  expectSame("name servers", of("zone.name_servers").map((n) => `${n.name} ${n.addresses}`), ['"ns1.contoso.test" ["127.0.0.1"]']);
  expectSame("records", of("zone.record").map((r) => `${r.name} ${r.type} ${r.value}`), [
    '"_sipinternaltls._tcp" "SRV" "0 0 5061 pool01.contoso.test."',
    `"lyncdiscoverinternal" "A" "${vipInternal}"`,
    `"webint" "A" "${vipInternal}"`,
    `"webext" "A" "${vipExternal}"`,
  ]);
  const pools = of("pool");
  expectSame("pools", pools.map((p) => `${p.name} ${p.fqdn} ${p.aliases} ${p.monitor}`),
    ['"pool01" "pool01.contoso.test" ["sip.contoso.test"] "pool01-sip"']);
  expectSame("members", of("pool.member").map((m) => `${m.name} ${m.fqdn} ${m.address}`),
    names.map((name, i) => `"${name}" "${name}.contoso.test" "${members[i]}"`));
  expectSame("monitors", of("monitor").map((m) => `${m.name} ${m.type} ${m.transport} ${m.port}`),
    ['"pool01-sip" "sip-options" "tls" 5061']);
  expectSame("virtual services", of("virtual_service").map((s) =>
    `${s.name} ${s.address} ${s.port}→${s.member_port || s.port} +${s.extra_ports || "table"} ${s.persistence} ${s.idle_timeout_s} ${s.monitor}`), [
    `"pool01-web-internal" "${vipInternal}" 443→443 +[80] "source-ip" 1800 "pool01-sip"`,
    `"pool01-web-external" "${vipExternal}" 443→4443 +table "none" 1800 "pool01-sip"`,
  ]);
  expectSame("mapped extra ports", of("virtual_service.extra_ports").map((p) => `${p.port}→${p.member_port}`), ["80→8080"]);
  expectSame("sections", new Set(blocks.map((b) => b.section)), ["zone", "zone.name_servers", "zone.record", "monitor",
    "pool", "pool.member", "virtual_service", "virtual_service.extra_ports"]);

  await page.click("#preview-apply");
  await page.locator("#config-version[data-applied]").waitFor();
  if (await page.locator("#wizard-open").getAttribute("open") !== null) throw new Error("the wizard stayed open after Apply");

  // Every member green on its SIP-over-TLS monitor, on both web VIPs too.
  await tab(page, "status");
  for (const name of names) {
    await page.locator(`tr[data-member=${name}] [data-monitor=pool01-sip][data-state=up]`).waitFor({ timeout: 20_000 });
  }
  await page.waitForFunction((count) => document.querySelectorAll("#services .dot.up").length === count,
    2 * members.length, { timeout: 20_000 });
  await shot(page, "all-green");

  // The same pool again: refused, naming what exists.
  await tab(page, "config");
  await page.click("#wizard-open summary");
  await wizard.locator("[name=pool_fqdn]").fill("pool01.contoso.test");
  await wizard.locator("[name=domain]").fill("contoso.test");
  await page.locator('#wizard-members tr[data-row="0"] [name=member_name]').fill("fe09");
  await page.locator('#wizard-members tr[data-row="0"] [name=member_address]').fill(members[0]);
  await page.click("#wizard-review");
  await page.locator("#wizard-errors li[data-refusal]", { hasText: "A pool named pool01 exists already." }).waitFor();
  await page.locator("#wizard-errors li[data-refusal]", { hasText: "A monitor named pool01-sip exists already." }).waitFor();
  await shot(page, "wizard-refused");

  // A Director pool in another SIP domain: its SIP records and web VIPs,
  // no lyncdiscoverinternal. Previewed only.
  const fill = async (fields, rows) => {
    for (const [name, value] of Object.entries(fields)) await wizard.locator(`[name=${name}]`).fill(value);
    for (const [i, [name, address]] of rows.entries()) {
      const row = page.locator(`#wizard-members tr[data-row="${i}"]`);
      await row.locator("[name=member_name]").fill(name);
      await row.locator("[name=member_fqdn]").fill("");
      await row.locator("[name=member_address]").fill(address);
    }
  };
  const previewed = async () => {
    await page.click("#wizard-review");
    await page.locator("#preview:not([hidden]) #preview-diff .added").first().waitFor();
    const found = addedBlocks(await page.locator("#preview-diff .added").allTextContents());
    await page.click("#preview-cancel");
    return (section) => found.filter((b) => b.section === section).map((b) => b.fields);
  };
  await wizard.locator("[name=template]").selectOption("director");
  await page.locator("#wizard-help", { hasText: "Directors do not host the Mobility Service" }).waitFor();
  // Required for a template with web VIPs: said before anything is sent.
  await wizard.locator("[name=web_internal_vip]").fill("");
  await page.click("#wizard-review");
  await page.locator("#wizard-errors li[data-refusal]", { hasText: "Give the internal web VIP address." }).waitFor();
  const otherVip = (last) => vipInternal.replace(/\.\d+$/, `.${last}`);
  await fill({ pool_fqdn: "dirpool.fabrikam.test", domain: "fabrikam.test", web_internal_fqdn: "webdir.fabrikam.test",
    web_internal_vip: otherVip(22), web_external_fqdn: "webdirext.fabrikam.test", web_external_vip: otherVip(23) },
  [["dir01", members[0]]]);
  const director = await previewed();
  expectSame("Director records", director("zone.record").map((r) => `${r.name} ${r.type}`),
    ['"_sipinternaltls._tcp" "SRV"', '"webdir" "A"', '"webdirext" "A"']);
  expectSame("Director pool", director("pool").map((p) => `${p.name} ${p.aliases}`), ['"dirpool" ["sip.fabrikam.test"]']);
  expectSame("Director VIPs", director("virtual_service").map((v) => v.name), ['"dirpool-web-internal"', '"dirpool-web-external"']);

  // Edge internal: the pool and its monitor, DNS only.
  await wizard.locator("[name=template]").selectOption("edge");
  if (await wizard.locator("[name=web_internal_vip]").isVisible()) throw new Error("web fields shown for Edge internal");
  await fill({ pool_fqdn: "edgepool.fabrikam.test" }, [["edge01", members[1]]]);
  const edge = await previewed();
  expectSame("Edge records", edge("zone.record"), []);
  expectSame("Edge pool", edge("pool").map((p) => `${p.name} ${p.aliases}`), ['"edgepool" undefined']);
  expectSame("Edge monitors", edge("monitor").map((m) => `${m.name} ${m.transport} ${m.port}`), ['"edgepool-sip" "tls" 5061']);
  expectSame("Edge VIPs", edge("virtual_service"), []);

  // The editor shows the mapped ports as a table and an unrelated edit
  // leaves them as written.
  const external = await page.evaluate(() => [...document.querySelectorAll("#config-form [data-path$='.name']")]
    .find((node) => node.value === "pool01-web-external").dataset.path.replace(/\.name$/, ""));
  if (await page.locator(`#config-form [data-path="${external}.member_port"]`).inputValue() !== "4443") throw new Error("member_port not shown");
  if (await page.locator(`#config-form [data-path="${external}.extra_ports[0].port"]`).inputValue() !== "80") throw new Error("extra port not shown");
  if (await page.locator(`#config-form [data-path="${external}.extra_ports[0].member_port"]`).inputValue() !== "8080") throw new Error("mapped member port not shown");
  await page.locator('#config-form [data-path="dns.ttl"]').fill("20");
  await page.click("#config-review");
  await page.locator("#preview-diff .added", { hasText: "ttl = 20" }).waitFor();
  const changed = async () => [...await page.locator("#preview-diff .added").allTextContents(),
    ...await page.locator("#preview-diff .removed").allTextContents()];
  expectSame("lines an unrelated edit changes", await changed(), ["+ ttl = 20", "- ttl = 30"]);
  // Remapping the extra port changes that line only.
  await page.locator(`#config-form [data-path="${external}.extra_ports[0].member_port"]`).fill("8081");
  await page.click("#config-review");
  await page.locator("#preview-diff .added", { hasText: "member_port = 8081" }).waitFor();
  expectSame("lines a remapped port changes", await changed(), ["+ ttl = 20", "- ttl = 30", "+ member_port = 8081", "- member_port = 8080"]);
  await page.click("#preview-cancel");
});
