// The saga console in a real browser: Debian's headless chromium driven by
// playwright-core against a running console (`ticketctl console`). A plain
// Node script: each check prints "ok", the first failure prints what was not
// seen, saves failure.png and exits 1. The closing line is "N passed, N failed".
//
// Environment: CONSOLE_URL, CONSOLE_ADMIN_KEY, COMPLETED_RESERVATION,
// COMPENSATED_RESERVATION, POISON_LETTER, VALID_LETTER, VALID_RESERVATION,
// SCREENSHOT_DIR; CHROMIUM (default /usr/bin/chromium).
// Install what it needs with scripts/install-browser.sh.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const STEP_MS = 30_000;

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`console test: environment variable ${name} is not set`);
    process.exit(1);
  }
  return value;
}

const base = required('CONSOLE_URL').replace(/\/+$/, '');
const adminKey = required('CONSOLE_ADMIN_KEY');
const completedReservation = required('COMPLETED_RESERVATION');
const compensatedReservation = required('COMPENSATED_RESERVATION');
const poisonLetter = required('POISON_LETTER');
const validLetter = required('VALID_LETTER');
const validReservation = required('VALID_RESERVATION');
const screenshots = required('SCREENSHOT_DIR');
mkdirSync(screenshots, { recursive: true });

class NotSeen extends Error {}

let passed = 0;
let page;
// Set once check() has told what failed, so it is not told twice.
let reported = false;
// Uncaught exceptions in the console's own code fail the run at the next check.
const pageErrors = [];

async function check(name, body) {
  try {
    await body();
    if (pageErrors.length) throw new NotSeen(`the page threw: ${pageErrors.join('; ')}`);
  } catch (error) {
    console.log(`not ok ${passed + 1} - ${name}`);
    console.log(`  ${error instanceof NotSeen ? error.message : error.stack}`);
    if (page) await page.screenshot({ path: join(screenshots, 'failure.png'), fullPage: true }).catch(() => {});
    console.log(`${passed} passed, 1 failed`);
    reported = true;
    throw error;
  }
  passed += 1;
  console.log(`ok ${passed} - ${name}`);
}

/** Waits for a locator to be visible, failing with what was not seen. */
async function see(locator, what, timeout = STEP_MS) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch {
    throw new NotSeen(`not seen within ${timeout / 1000} s: ${what}`);
  }
}

/** Polls until `probe` returns `{ ok: true }`; a failure names what was awaited and the last `seen`. */
async function until(probe, what, timeout = STEP_MS, every = 250) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe().catch((error) => `(error: ${error.message.split('\n')[0]})`);
    if (last?.ok) return;
    if (Date.now() > deadline) {
      throw new NotSeen(`not seen within ${timeout / 1000} s: ${what} (last seen: ${JSON.stringify(last?.seen ?? last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

/** Presses Tab until the element matching `selector` has focus: proves it is reachable by keyboard. */
async function tabTo(selector, what, maxPresses = 60) {
  for (let i = 0; i < maxPresses; i += 1) {
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
    await page.keyboard.press('Tab');
  }
  throw new NotSeen(`${what} not reached with ${maxPresses} presses of Tab`);
}

async function textOf(testid) {
  return (await page.getByTestId(testid).first().textContent() ?? '').trim();
}

async function verdictIs(expected, what) {
  await until(async () => {
    const verdict = await page.getByTestId('saga-verdict').count() ? await textOf('saga-verdict') : null;
    const problem = await page.locator('#main [role=alert]').count() ? await page.locator('#main [role=alert]').first().textContent() : null;
    return { ok: verdict === expected, seen: verdict ?? problem ?? 'no verdict yet' };
  }, `verdict "${expected}" ${what}`);
}

async function go(hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
}

async function status(path) {
  const response = await page.request.get(`${base}${path}`, { maxRedirects: 0 });
  return response.status();
}

function letterRow(id) {
  return page.locator(`[data-testid="dlq-row"][data-letter-id="${id}"]`);
}

function outcomeOf(id) {
  return page.getByTestId('dlq-outcome').filter({ hasText: id });
}

async function redriveSelected(letter, outcome) {
  await page.getByTestId('dlq-redrive').click();
  const confirm = page.getByTestId('dlq-confirm');
  await see(confirm, 'the in-page confirmation button "Redrive 1 letter"');
  // The confirmation takes focus, so Enter confirms: the keyboard path.
  await until(async () => ({ ok: await confirm.evaluate((b) => b === document.activeElement), seen: 'focus elsewhere' }), 'focus on the confirm button');
  await page.keyboard.press('Enter');
  await until(async () => {
    const item = outcomeOf(letter);
    const seen = await item.count() ? await item.first().getAttribute('data-outcome') : 'no outcome';
    return { ok: seen === outcome, seen };
  }, `outcome "${outcome}" for letter ${letter}`);
}

async function selectOnly(letter) {
  await see(letterRow(letter), `dead letter ${letter} in the list`);
  for (const box of await page.locator('input[data-letter]:checked').all()) await box.uncheck();
  await letterRow(letter).locator('input[type=checkbox]').check();
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-background-networking'],
    headless: true,
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await run();
  } finally {
    await browser.close();
  }
}

async function run() {
  // (a) Sign-in is required, a wrong key is refused, the right one opens the console.
  await check('GET / without a session lands on /sign-in', async () => {
    await page.goto(`${base}/`);
    const path = new URL(page.url()).pathname;
    if (path !== '/sign-in') throw new NotSeen(`expected /sign-in, got ${path}`);
    await see(page.getByLabel('Admin key'), 'the "Admin key" field');
  });

  await check('/api/health without a session answers 401', async () => {
    const code = await status('/api/health');
    if (code !== 401) throw new NotSeen(`/api/health answered ${code}, not 401`);
  });

  await check('a wrong key shows an error (401) and no console', async () => {
    // Chromium applies autofocus at its next rendering update, which may come after "load".
    await until(async () => {
      const focused = await page.evaluate(() => document.activeElement?.getAttribute('name') ?? document.activeElement?.tagName);
      return { ok: focused === 'key', seen: `focus on ${focused}` };
    }, 'the key field focused on load (autofocus)', 5_000);
    await page.keyboard.type('not-the-admin-key');
    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/sign-in' && r.request().method() === 'POST'),
      page.keyboard.press('Enter'),
    ]);
    if (response.status() !== 401) throw new NotSeen(`a wrong key answered ${response.status()}, not 401`);
    await see(page.locator('[role=alert].error'), 'the sign-in error message');
    if (await page.getByTestId('sign-out').count()) throw new NotSeen('the console is shown after a wrong key');
  });

  await check('the right key, typed and submitted with the keyboard, shows the console', async () => {
    await tabTo('input[name=key]', 'the key field');
    await page.keyboard.type(adminKey);
    await page.keyboard.press('Tab');
    const onButton = await page.evaluate(() => document.activeElement?.matches('button[type=submit], input[type=submit]'));
    if (!onButton) throw new NotSeen('Tab from the key field does not reach the "Sign in" button');
    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/sign-in' && r.request().method() === 'POST'),
      page.keyboard.press('Enter'),
    ]);
    if (response.status() !== 303) throw new NotSeen(`signing in with the right key answered ${response.status()}, not 303 to /`);
    await page.waitForURL((url) => url.pathname === '/');
    await see(page.getByTestId('live-table'), 'the live table after signing in');
    if (page.url().includes(adminKey)) throw new NotSeen('the admin key appears in the URL');
    // Reported, not asserted: a shared CI machine's timings vary.
    const [served, ready] = await page.evaluate(() => {
      const navigation = performance.getEntriesByType('navigation')[0];
      return [navigation?.responseEnd, navigation?.domContentLoadedEventEnd].map((ms) => Math.round(ms ?? -1));
    });
    console.log(`  (console page: served after ${served} ms, DOMContentLoaded after ${ready} ms)`);
  });

  await check('an action without the CSRF token is refused', async () => {
    // A harmless action: a dry run of no letters.
    const response = await page.request.post(`${base}/api/dead-letters/redrive`, { data: { letters: [], dry_run: true } });
    const code = response.status();
    if (code < 400 || code >= 500 || code === 401) throw new NotSeen(`a POST without X-CSRF-Token answered ${code}, not a 4xx refusal`);
  });

  // (b) The live flow.
  await check('live: the completed saga\'s PaymentCompleted row appears', async () => {
    await see(page.getByTestId('live-row').filter({ hasText: completedReservation }).filter({ hasText: 'PaymentCompleted' }),
      `a live row with key ${completedReservation} and event type PaymentCompleted`);
  });

  await check('live: the outcome chart receives a second of outcomes', async () => {
    const chart = page.getByTestId('outcome-chart');
    await see(chart, 'the outcome chart');
    await until(async () => {
      const seen = Number(await chart.getAttribute('data-seconds'));
      return { ok: seen >= 1, seen: `${seen} s charted` };
    }, 'an "outcomes" message drawn on the chart (the server sends one a second)', 5_000);
  });

  await check('live: the dropped counter is shown', async () => {
    await see(page.getByTestId('live-dropped'), 'the dropped counter');
    const text = await textOf('live-dropped');
    if (!/^[\d,]+ dropped$/.test(text)) throw new NotSeen(`dropped counter reads "${text}", not "N dropped"`);
  });

  await check('live: a key filter (applied by the server) shows only that saga\'s records', async () => {
    const key = page.getByLabel('Key', { exact: true });
    await key.fill(completedReservation);
    await key.press('Enter');
    const rows = page.getByTestId('live-row');
    await see(rows.filter({ hasText: completedReservation }).filter({ hasText: 'PaymentCompleted' }),
      `the PaymentCompleted row of ${completedReservation} with the key filter set`);
    const others = await rows.evaluateAll((trs, id) => trs.filter((tr) => !tr.textContent.includes(id)).map((tr) => tr.innerText.replace(/\s+/g, ' ')), completedReservation);
    if (others.length) throw new NotSeen(`with the key filter set to ${completedReservation}, ${others.length} row(s) of other keys are shown, e.g. "${others[0]}"`);
    await key.fill('');
    await key.press('Enter');
    await see(rows.filter({ hasText: completedReservation }).filter({ hasText: 'PaymentCompleted' }),
      `the PaymentCompleted row of ${completedReservation} again once the filter is cleared`);
  });

  await check('live: Pause and Resume work from the keyboard', async () => {
    await tabTo('[data-testid="live-pause"]', 'the Pause button');
    await page.keyboard.press('Enter');
    const pause = page.getByTestId('live-pause');
    await until(async () => ({ ok: await pause.getAttribute('aria-pressed') === 'true', seen: await pause.textContent() }), 'the Pause button pressed');
    await see(page.getByTestId('live-paused-count'), 'the paused count');
    const text = await textOf('live-paused-count');
    if (!/arrived while paused/.test(text)) throw new NotSeen(`paused count reads "${text}"`);
    await page.keyboard.press('Enter');
    await until(async () => ({ ok: await pause.getAttribute('aria-pressed') === 'false', seen: await pause.textContent() }), 'the button back to Pause after Resume');
    // The filter change restarted the chart: let it draw again for the picture.
    await until(async () => ({ ok: Number(await page.getByTestId('outcome-chart').getAttribute('data-seconds')) >= 2, seen: 'fewer than 2 s charted' }),
      'two seconds of outcomes on the chart', 5_000);
    await page.screenshot({ path: join(screenshots, 'live.png') });
  });

  // (c) The completed saga's page, by reservation id and by payment id.
  let paymentId;
  await check('saga: the completed saga has verdict "completed", 8+ steps, in lanes', async () => {
    await page.getByRole('link', { name: 'Saga', exact: true }).click();
    const input = page.getByLabel('Reservation, payment or fan id');
    await see(input, 'the saga search field');
    await input.fill(completedReservation);
    await input.press('Enter');
    await verdictIs('completed', `for ${completedReservation}`);
    const steps = await page.getByTestId('saga-step').count();
    if (steps < 8) throw new NotSeen(`${steps} steps on the timeline, expected at least 8`);
    await see(page.getByTestId('saga-timeline'), 'the saga timeline');
    await see(page.locator('.lane-head'), 'the lane headers');
    const lanes = await page.locator('[data-testid="saga-step"] .step').evaluateAll((cards) => new Set(cards.map((card) => getComputedStyle(card).gridColumnStart)).size);
    if (lanes < 4) throw new NotSeen(`the steps sit in ${lanes} lane(s), expected the completed saga to cross at least 4`);
    await page.screenshot({ path: join(screenshots, 'saga.png'), fullPage: true });
    paymentId = await page.locator('[data-testid="saga-step"] pre').evaluateAll((pres) => {
      for (const pre of pres) {
        try {
          const id = JSON.parse(pre.textContent).payment_id;
          if (id) return id;
        } catch { /* a payload that is not JSON names no payment */ }
      }
      return null;
    });
    if (!paymentId) throw new NotSeen('no step payload has a payment_id');
  });

  await check('saga: searching by the payment id reaches the same completed saga', async () => {
    const input = page.getByLabel('Reservation, payment or fan id');
    await input.fill(paymentId);
    await input.press('Enter');
    await until(async () => {
      const heading = await page.locator('#saga-heading').count() ? await page.locator('#saga-heading').textContent() : '';
      return { ok: new URL(page.url()).hash.includes(paymentId) && heading.includes(completedReservation), seen: heading || page.url() };
    }, `the saga of reservation ${completedReservation} found by payment ${paymentId}`);
    await verdictIs('completed', `for payment ${paymentId}`);
  });

  // (d) The compensated saga shows its branch.
  await check('saga: the compensated saga shows "payment_failed" and a compensation step', async () => {
    await go(`#/saga/${compensatedReservation}`);
    await verdictIs('compensated', `for ${compensatedReservation}`);
    const branches = await textOf('saga-branches');
    if (!branches.includes('payment_failed')) throw new NotSeen(`branches read "${branches}", no payment_failed`);
    await see(page.locator('[data-testid="saga-step"].compensation').filter({ hasText: '↩ compensation' }), 'a step marked "↩ compensation"');
    await page.screenshot({ path: join(screenshots, 'saga-compensated.png'), fullPage: true });
  });

  // (e) Stuck sagas.
  await check('stuck: the page shows its table or its empty state', async () => {
    await page.getByRole('link', { name: 'Stuck', exact: true }).click();
    await see(page.locator('[data-testid="stuck-table"], [data-testid="stuck-empty"]'), 'the stuck table or "No saga is in flight…"');
    await page.screenshot({ path: join(screenshots, 'stuck.png'), fullPage: true });
  });

  // (f) Dead letters: dry run, redrive once, refuse the second time.
  await check('dead letters: both letters are listed with their reasons', async () => {
    await page.getByRole('link', { name: 'Dead letters', exact: true }).click();
    for (const id of [poisonLetter, validLetter]) {
      await see(letterRow(id), `dead letter ${id} in the list`);
      const reason = (await letterRow(id).locator('td.reason').textContent() ?? '').trim();
      if (!reason) throw new NotSeen(`dead letter ${id} has no reason`);
    }
  });

  await check('dead letters: a dry run of the poison letter says "would_replay" and changes nothing', async () => {
    await selectOnly(poisonLetter);
    await page.getByTestId('dlq-dry-run').click();
    await until(async () => {
      const item = outcomeOf(poisonLetter);
      const seen = await item.count() ? await item.first().getAttribute('data-outcome') : 'no outcome';
      return { ok: seen === 'would_replay', seen };
    }, `dry-run outcome "would_replay" for ${poisonLetter}`);
    await page.getByRole('button', { name: 'Reload' }).click();
    await see(letterRow(poisonLetter), `dead letter ${poisonLetter} after reloading`);
    const row = await letterRow(poisonLetter).textContent();
    if (row.includes('replayed at')) throw new NotSeen(`the dry run replayed ${poisonLetter}: its row reads "replayed at"`);
  });

  await check('dead letters: redriving the valid letter (confirmed with Enter) replays it', async () => {
    await selectOnly(validLetter);
    await redriveSelected(validLetter, 'replayed');
  });

  await check('saga: the redriven letter\'s saga reaches "completed"', async () => {
    await go(`#/saga/${validReservation}`);
    const deadline = Date.now() + STEP_MS;
    for (;;) {
      await until(async () => ({ ok: await page.getByTestId('saga-verdict').count() || await page.locator('#main [role=alert]').count(), seen: 'loading' }),
        `the saga page of ${validReservation}`, Math.max(1000, deadline - Date.now()));
      const verdict = await page.getByTestId('saga-verdict').count() ? await textOf('saga-verdict') : 'none';
      if (verdict === 'completed') break;
      if (Date.now() > deadline) throw new NotSeen(`verdict "completed" for ${validReservation} within 30 s after the redrive (last: ${verdict})`);
      await page.waitForTimeout(1000);
      await page.getByTestId('saga-refresh').click();
    }
  });

  await check('dead letters: the valid letter shows replayed, and a second redrive is refused', async () => {
    await page.getByRole('link', { name: 'Dead letters', exact: true }).click();
    await see(letterRow(validLetter).filter({ hasText: 'replayed at' }), `dead letter ${validLetter} marked "replayed at"`);
    await selectOnly(validLetter);
    await redriveSelected(validLetter, 'refused');
    await page.screenshot({ path: join(screenshots, 'dead-letters.png'), fullPage: true });
  });

  // (g) Health and the audit.
  await check('health: five services, all ready', async () => {
    await page.getByRole('link', { name: 'Health', exact: true }).click();
    await see(page.getByTestId('health-table'), 'the health table');
    const rows = page.getByTestId('health-row');
    const services = await rows.evaluateAll((trs) => trs.map((tr) => `${tr.dataset.service}:${tr.dataset.ready}`));
    if (services.length !== 5) throw new NotSeen(`${services.length} service rows, expected 5: ${services.join(', ')}`);
    const notReady = services.filter((s) => !s.endsWith(':true'));
    if (notReady.length) throw new NotSeen(`services not ready: ${notReady.join(', ')}`);
  });

  await check('health: Run audit shows "no violations"', async () => {
    await page.getByTestId('audit-run').click();
    await see(page.getByTestId('audit-result'), 'the audit result');
    const text = await textOf('audit-result');
    if (!text.includes('no violations')) throw new NotSeen(`the audit reads: ${text}`);
    await page.screenshot({ path: join(screenshots, 'health.png'), fullPage: true });
  });

  // (h) Sign-out ends the session.
  await check('sign out returns to /sign-in and /api/health is 401 again', async () => {
    await Promise.all([page.waitForURL((url) => url.pathname === '/sign-in'), page.getByTestId('sign-out').click()]);
    const code = await status('/api/health');
    if (code !== 401) throw new NotSeen(`/api/health answered ${code} after signing out, not 401`);
  });

  console.log(`${passed} passed, 0 failed`);
}

main().catch((error) => {
  if (!reported) console.log(`console test could not run: ${error.stack}`);
  process.exit(1);
});
