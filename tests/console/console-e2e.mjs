// Drives the gateway console in headless Chromium as an information governance officer would.
// Started by tests/console.rs, which runs a real gateway with data and releases and passes
// what to expect in the environment:
//   CONSOLE_URL        https://127.0.0.1:PORT
//   AUDITOR_TOKEN      a JWT of role auditor; AUDITOR_SUB its subject
//   ANALYST_TOKEN      a JWT of role analyst (must be refused)
//   AGREEMENT          an agreement with releases, to filter the log by
//   EXPIRED_AGREEMENT  an agreement whose end date has passed
//   DUE_AGREEMENT      an agreement ending and due for review within 60 days
//   OVERDUE_AGREEMENT  an agreement in force whose review date has passed
//   PERSON_TOKENS      KIND:HEX lines of one person; EXPECT_RELEASES how many releases they were in
//   OUT_DIR            where screenshots (*.png) and the HTML of every page (*.html) go
//   CHROMIUM           the browser (default /usr/bin/chromium)
// Exits non-zero with a message on the first step that does not hold, after saving the
// page as it was then (NN-failed.png and NN-failed.html in OUT_DIR, NN the step number).

import { chromium } from 'playwright-core';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const url = env('CONSOLE_URL');
const out = env('OUT_DIR');
mkdirSync(out, { recursive: true });

let step = 0;
async function save(page, name) {
  step += 1;
  const base = join(out, `${String(step).padStart(2, '0')}-${name}`);
  await page.screenshot({ path: `${base}.png`, fullPage: true });
  writeFileSync(`${base}.html`, await page.content());
}
function check(cond, what) {
  if (!cond) throw new Error(`console step failed: ${what}`);
  console.log(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
// The page of the step under way, saved as NN-failed.png/.html if a step fails.
let page;
try {
  // The gateway's dev certificate is signed by the dev partnership CA, not a public one.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  page = await context.newPage();

  // Not signed in: every page sends the browser to the sign-in page.
  await page.goto(`${url}/entries`);
  check(new URL(page.url()).pathname === '/login', 'an anonymous visit is sent to /login');

  // An analyst's token is refused.
  await page.fill('#token', env('ANALYST_TOKEN'));
  let resp = await Promise.all([page.waitForNavigation(), page.click('#sign-in')]).then((r) => r[0]);
  check(resp && resp.status() === 403, `an analyst token is refused with 403 (got ${resp && resp.status()})`);
  check(await page.isVisible('#refused'), 'the refusal says why');
  await save(page, 'analyst-refused');
  resp = await page.goto(`${url}/entries`);
  check(new URL(page.url()).pathname === '/login', 'the refused analyst has no session');

  // The auditor signs in and lands on the audit log.
  await page.fill('#token', env('AUDITOR_TOKEN'));
  await Promise.all([page.waitForNavigation(), page.click('#sign-in')]);
  check(new URL(page.url()).pathname === '/entries', 'the auditor lands on the audit log');
  check((await page.textContent('#who')) === env('AUDITOR_SUB'), 'the header names the auditor');
  await save(page, 'log');

  // Filter the log to one agreement.
  const agreement = env('AGREEMENT');
  await page.selectOption('select[name=agreement]', agreement);
  await Promise.all([page.waitForNavigation(), page.click('#apply')]);
  check(new URL(page.url()).searchParams.get('agreement') === agreement, 'the filter is in the URL');
  const cells = await page.$$eval('#entries tbody tr td:nth-child(7)', (tds) => tds.map((td) => td.textContent));
  check(cells.length > 0, `the filtered log shows entries of ${agreement} (${cells.length})`);
  check(cells.every((c) => c.startsWith(agreement + ' ')), 'every entry shown is of that agreement');
  const actions = await page.$$eval('#entries tbody tr td:nth-child(5)', (tds) => tds.map((td) => td.textContent));
  check(actions.includes('release'), 'the filtered log includes a release');
  await save(page, 'log-filtered');

  // Open the newest release entry: its inclusion proof is verified.
  const row = page.locator('#entries tbody tr', { has: page.locator('td:nth-child(5)', { hasText: /^release$/ }) }).first();
  const index = await row.getAttribute('data-index');
  await Promise.all([page.waitForNavigation(), row.locator('a').first().click()]);
  check(new URL(page.url()).pathname === `/entries/${index}`, `entry ${index} opens`);
  check((await page.getAttribute('#proof-status', 'data-status')) === 'verified', 'its inclusion proof is verified');
  check((await page.textContent('#entry')).includes(agreement), 'the entry names the agreement');
  await save(page, 'entry-proof');

  // The latest checkpoint, with the whole log verified.
  await page.click('header a[href="/checkpoint"]');
  await page.waitForSelector('#log-status');
  check((await page.getAttribute('#log-status', 'data-status')) === 'verified', 'the log verifies against the signed checkpoint');
  await save(page, 'checkpoint');

  // Agreements: the expired one is flagged.
  await page.click('header a[href="/agreements"]');
  await page.waitForSelector('#agreements');
  const expired = page.locator(`#agreements tr[data-agreement="${env('EXPIRED_AGREEMENT')}"]`);
  check((await expired.getAttribute('class')) === 'expired', 'the expired agreement is highlighted');
  check((await expired.locator('.status').textContent()).includes('EXPIRED'), 'the expired agreement says EXPIRED');
  const inForce = page.locator(`#agreements tr[data-agreement="${agreement}"] .status`);
  check(!(await inForce.textContent()).includes('EXPIRED'), `${agreement} is not flagged expired`);
  const due = page.locator(`#agreements tr[data-agreement="${env('DUE_AGREEMENT')}"]`);
  check((await due.getAttribute('class')) === 'due', 'the agreement ending within 60 days is highlighted as due');
  const dueText = await due.locator('.status').textContent();
  check(/ends in \d+ day\(s\)/.test(dueText), `it says when it ends (${dueText})`);
  check(/review due in \d+ day\(s\)/.test(dueText), `it says when its review is due (${dueText})`);
  const overdue = page.locator(`#agreements tr[data-agreement="${env('OVERDUE_AGREEMENT')}"]`);
  check((await overdue.getAttribute('class')) === 'expired', 'the agreement overdue for review is highlighted');
  const overdueText = await overdue.locator('.status').textContent();
  check(overdueText.includes('review overdue'), `it says its review is overdue (${overdueText})`);
  check(!overdueText.includes('EXPIRED'), 'the agreement overdue for review is still in force');
  await save(page, 'agreements');

  // Releases per agreement.
  await page.click('header a[href="/releases"]');
  await page.waitForSelector('#per-agreement');
  const tally = page.locator(`#per-agreement tr[data-agreement="${agreement}"]`).first();
  check(Number(await tally.locator('td:nth-child(3)').textContent()) >= 1, `releases under ${agreement} are counted`);
  await save(page, 'releases');

  // Who saw this person's data?
  await page.click('header a[href="/person"]');
  await page.fill('#tokens', env('PERSON_TOKENS'));
  await Promise.all([page.waitForNavigation(), page.click('#lookup')]);
  const count = await page.textContent('#release-count');
  check(count === env('EXPECT_RELEASES'), `the person lookup finds ${env('EXPECT_RELEASES')} release(s) (shows ${count})`);
  await save(page, 'person');

  // Sign out: the session is gone.
  await Promise.all([page.waitForNavigation(), page.click('header button')]);
  await page.goto(`${url}/entries`);
  check(new URL(page.url()).pathname === '/login', 'after signing out the log needs a sign-in again');
  console.log('console e2e: all steps passed');
} catch (err) {
  if (page) {
    try {
      await save(page, 'failed');
      console.error(`console e2e: the failing page is saved in ${out} as ${String(step).padStart(2, '0')}-failed.png and .html`);
    } catch (saveErr) {
      console.error(`console e2e: cannot save the failing page: ${saveErr}`);
    }
  }
  throw err;
} finally {
  await browser.close();
}
