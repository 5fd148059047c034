// Real players on our ladders: hls.js and shaka-player (with mux.js) in headless Chromium
// (Debian's `chromium`, driven by playwright-core). Each ladder is served over a local HTTP
// server (127.0.0.1, byte ranges supported); each player loads the master playlist, plays, is
// made to switch to the other end of the ladder, seeks into the middle, and plays to the end,
// with no error event. hls.js also loads the I-frame variants (createIFramePlayer) when the
// ladder has them.
//
//   node tests/players/run.mjs --modules <dir with node_modules> [--chromium /usr/bin/chromium] \
//        [--only NAME] LABEL=LADDER_DIR...
//
// Prints one line per test and a closing line in cargo's form ("test result: … N passed;
// N failed; N ignored"), which scripts/test.sh adds to its total. When Chromium cannot start it
// prints "players: skipped: Chromium cannot start: …", counts every test as ignored and exits 0:
// the only case in which these tests are skipped. Exit status 1 when a test failed.

import { createRequire } from 'node:module';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
let modules = path.resolve('target/tools/players');
let chromiumPath = '/usr/bin/chromium';
let only = null; // run only the tests whose name (e.g. "ts::shaka") contains this
const ladders = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--modules') modules = path.resolve(args[++i]);
  else if (args[i] === '--chromium') chromiumPath = args[++i];
  else if (args[i] === '--only') only = args[++i];
  else {
    const [label, dir] = args[i].split('=');
    ladders.push({ label, dir: path.resolve(dir) });
  }
}
if (ladders.length === 0) {
  console.error('usage: run.mjs --modules DIR LABEL=LADDER_DIR...');
  process.exit(2);
}

const require = createRequire(path.join(modules, 'package.json'));
const { chromium } = require('playwright-core');
const lib = {
  'hls.js': require.resolve('hls.js/dist/hls.min.js'),
  'mux.js': require.resolve('mux.js/dist/mux.min.js'),
  'shaka.js': require.resolve('shaka-player/dist/shaka-player.compiled.js'),
};

// A whole test may not take longer than this (the ladders are short; playback runs at 4×).
const TEST_TIMEOUT_MS = 90_000;

const TYPES = {
  '.m3u8': 'application/vnd.apple.mpegurl',
  '.ts': 'video/mp2t',
  '.m4s': 'video/iso.segment',
  '.mp4': 'video/mp4',
  '.aac': 'audio/aac',
  '.js': 'text/javascript',
  '.html': 'text/html',
};

function serve() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    let file = null;
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><html><body></body></html>');
      return;
    }
    const libMatch = url.pathname.match(/^\/lib\/(.+)$/);
    const ladderMatch = url.pathname.match(/^\/ladder\/([^/]+)\/(.+)$/);
    if (libMatch && lib[libMatch[1]]) file = lib[libMatch[1]];
    if (ladderMatch) {
      const ladder = ladders.find((l) => l.label === ladderMatch[1]);
      const rel = path.normalize(decodeURIComponent(ladderMatch[2]));
      if (ladder && !rel.startsWith('..')) file = path.join(ladder.dir, rel);
    }
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404);
      res.end();
      return;
    }
    const size = fs.statSync(file).size;
    const headers = {
      'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
      'accept-ranges': 'bytes',
      'cache-control': 'no-store',
    };
    const range = (req.headers.range || '').match(/^bytes=(\d+)-(\d*)$/);
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': end - start + 1 });
      fs.createReadStream(file, { start, end }).pipe(res);
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': size });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// ---- what runs in the page ----------------------------------------------------------------

// Shared helpers, defined in the page once.
const PAGE_HELPERS = `
// What the page's videos were doing, for a timeout's message.
window.videoStates = () => [...document.querySelectorAll('video')].map((v) => {
  const ranges = [];
  for (let i = 0; i < v.buffered.length; i++) ranges.push(v.buffered.start(i).toFixed(2) + '-' + v.buffered.end(i).toFixed(2));
  return 't=' + v.currentTime.toFixed(2) + ' readyState=' + v.readyState + ' seeking=' + v.seeking
    + ' paused=' + v.paused + ' ended=' + v.ended + ' buffered=[' + ranges.join(',') + ']';
}).join('; ');
window.waitFor = (what, ms, fn) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('timed out waiting for ' + what + ' (video: ' + videoStates() + ')')), ms);
  fn((v) => { clearTimeout(t); resolve(v); });
});
window.once = (target, event, ms) => waitFor(event, ms, (done) => target.addEventListener(event, done, { once: true }));
// A user seeks a player that is playing, not one still settling a switch: Chromium drops a
// seek made while the player's own buffer-clearing seek is pending (shaka's
// selectVariantTrack(track, true) makes one), with FFmpeg's fMP4 ladders as with ours.
window.settled = (video, ms) => waitFor('playback settled (not seeking, data ahead)', ms, (done) => {
  const poll = setInterval(() => { if (!video.seeking && video.readyState >= 3) { clearInterval(poll); done(); } }, 50);
});
window.seekTo = async (video, t, ms) => {
  await settled(video, ms);
  const seeked = once(video, 'seeked', ms);
  video.currentTime = t;
  await seeked;
};
window.newVideo = () => {
  const v = document.createElement('video');
  v.muted = true;
  document.body.appendChild(v);
  return v;
};
`;

async function hlsjsPlays(src) {
  const errors = [];
  const notes = [];
  const video = newVideo();
  const hls = new Hls({ enableWorker: true });
  hls.on(Hls.Events.ERROR, (_, d) => {
    const line = `${d.type}/${d.details}${d.fatal ? ' (fatal)' : ''} at ${video.currentTime.toFixed(2)} s`;
    // hls.js steps over the first frames' gap at the start of any H.264 stream with B-frames
    // (first DTS < first PTS; FFmpeg's own HLS output shows it too): a note, not an error.
    if (!d.fatal && d.details === Hls.ErrorDetails.BUFFER_SEEK_OVER_HOLE && video.currentTime < 0.5) notes.push(line);
    else errors.push(line);
  });
  const switches = [];
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => switches.push(hls.levels[d.level].height));
  const parsed = waitFor('MANIFEST_PARSED', 20000, (done) => hls.once(Hls.Events.MANIFEST_PARSED, (_, d) => done(d)));
  hls.loadSource(src);
  hls.attachMedia(video);
  await parsed;
  const heights = hls.levels.map((l) => l.height);
  await video.play();
  video.playbackRate = 4;
  // Switch to each end of the ladder and see the switch happen.
  const switchTo = async (level) => {
    if (hls.currentLevel === level) return;
    const seen = waitFor(`LEVEL_SWITCHED to ${level}`, 20000, (done) => {
      const on = (_, d) => { if (d.level === level) { hls.off(Hls.Events.LEVEL_SWITCHED, on); done(); } };
      hls.on(Hls.Events.LEVEL_SWITCHED, on);
    });
    // nextLevel: switch at the next fragment, as ABR does, without aborting the one loading.
    hls.nextLevel = level;
    await seen;
  };
  await waitFor('playback past 0.5 s', 20000, (done) => {
    const poll = setInterval(() => { if (video.currentTime > 0.5) { clearInterval(poll); done(); } }, 50);
  });
  await switchTo(hls.levels.length - 1);
  await switchTo(0);
  const duration = video.duration;
  await seekTo(video, duration / 2, 20000);
  const afterSeek = video.currentTime;
  await once(video, 'ended', 60000);
  hls.destroy();
  return { heights, switches, duration, afterSeek, ended: true, notes, errors };
}

async function hlsjsIFrames(src) {
  const errors = [];
  const hls = new Hls();
  const parsed = waitFor('MANIFEST_PARSED', 20000, (done) => hls.once(Hls.Events.MANIFEST_PARSED, done));
  hls.loadSource(src);
  await parsed;
  const variants = hls.iframeVariants.length;
  if (variants === 0) return { variants, skipped: 'the ladder has no I-frame variants' };
  const iframes = hls.createIFramePlayer();
  if (!iframes) return { variants, errors: ['createIFramePlayer returned null'] };
  iframes.on(Hls.Events.ERROR, (_, d) => errors.push(`${d.type}/${d.details}${d.fatal ? ' (fatal)' : ''}`));
  const video = newVideo();
  iframes.attachMedia(video);
  const buffered = [];
  iframes.on(Hls.Events.FRAG_BUFFERED, (_, d) => buffered.push(d.frag.start));
  const loaded = waitFor('LEVEL_LOADED', 20000, (done) => iframes.once(Hls.Events.LEVEL_LOADED, (_, d) => done(d)));
  const bufferedMore = (what, before, ms) => waitFor(what, ms, (done) => {
    const poll = setInterval(() => { if (buffered.length > before) { clearInterval(poll); done(); } }, 50);
  });
  // Scrubbing, as a UI does it: loadMediaAt(t) again until an I-frame for t is buffered (a call
  // made while the I-frame player is still loading its playlist can be dropped).
  const scrubTo = async (t) => {
    for (let attempt = 1; ; attempt++) {
      const before = buffered.length;
      iframes.loadMediaAt(t);
      try {
        return await bufferedMore(`an I-frame at ${t.toFixed(2)} s`, before, 5000);
      } catch (e) {
        if (attempt === 4) throw e;
      }
    }
  };
  iframes.loadMediaAt(0);
  const level = await loaded;
  const total = level.details.totalduration;
  const frames = level.details.fragments.length;
  // The start, the middle, near the end: each must buffer an I-frame.
  for (const t of [0, total / 2, Math.max(0, total - 1)]) await scrubTo(t);
  iframes.destroy();
  hls.destroy();
  return { variants, frames, buffered, errors };
}

async function shakaPlays(src) {
  const errors = [];
  shaka.polyfill.installAll();
  const video = newVideo();
  const player = new shaka.Player();
  await player.attach(video);
  player.addEventListener('error', (e) => errors.push(`shaka ${e.detail.code} (${e.detail.severity === 2 ? 'critical' : 'recoverable'}) at ${video.currentTime.toFixed(2)} s`));
  // Switching is ours to make, not the bandwidth estimator's.
  player.configure({ abr: { enabled: false } });
  await player.load(src);
  const tracks = player.getVariantTracks().sort((a, b) => a.height - b.height);
  const heights = tracks.map((t) => t.height);
  await video.play();
  // A switch is done when the new variant's frames are on screen and playback goes on, as a
  // viewer sees it; only then the next action. (Two buffer-clearing switches in the same
  // instant can leave shaka 5.2 seeking over an empty buffer for good on a loaded machine,
  // with FFmpeg's own ladders as with ours: the "active" flag flips before any data moves.)
  const switchTo = async (track) => {
    player.selectVariantTrack(track, true);
    await waitFor(`${track.height}p frames on screen`, 20000, (done) => {
      const poll = setInterval(() => {
        if (video.videoHeight === track.height && !video.seeking && video.readyState >= 3) { clearInterval(poll); done(); }
      }, 50);
    });
  };
  await switchTo(tracks[tracks.length - 1]);
  await switchTo(tracks[0]);
  const switches = player.getStats().switchHistory.map((s) => s.id);
  const duration = video.duration;
  await seekTo(video, duration / 2, 20000);
  video.playbackRate = 4;
  const afterSeek = video.currentTime;
  await once(video, 'ended', 60000);
  await player.destroy();
  return { heights, switches, duration, afterSeek, ended: true, errors };
}

// ---- the runner ---------------------------------------------------------------------------

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

async function main() {
  const started = Date.now();
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: chromiumPath,
      // Root in CI and containers: Chromium's sandbox needs user namespaces it may not have.
      args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required', '--mute-audio'],
    });
  } catch (e) {
    const reason = String(e.message || e).split('\n')[0];
    const count = ladders.length * 3;
    console.log(`players: skipped: Chromium cannot start: ${reason}`);
    console.log(`test result: ok. 0 passed; 0 failed; ${count} ignored; 0 measured; 0 filtered out`);
    return 0;
  }
  const server = await serve();
  const base = `http://127.0.0.1:${server.address().port}`;
  const results = { passed: 0, failed: 0, ignored: 0 };
  const report = (name, outcome, detail) => {
    results[outcome] += 1;
    const word = { passed: 'ok', failed: 'FAILED', ignored: 'ignored' }[outcome];
    console.log(`test players::${name} ... ${word}${detail ? ` (${detail})` : ''}`);
  };
  const tests = [
    ['hlsjs', ['hls.js'], hlsjsPlays],
    ['shaka', ['mux.js', 'shaka.js'], shakaPlays],
    ['hlsjs_iframes', ['hls.js'], hlsjsIFrames],
  ];
  for (const ladder of ladders) {
    const src = `${base}/ladder/${ladder.label}/master.m3u8`;
    for (const [name, scripts, fn] of tests) {
      const testName = `${ladder.label}::${name}`;
      if (only && !testName.includes(only)) continue;
      const page = await browser.newPage();
      const console_errors = [];
      page.on('pageerror', (e) => console_errors.push(`page error: ${e.message}`));
      try {
        await page.goto(`${base}/`);
        for (const s of scripts) await page.addScriptTag({ url: `/lib/${s}` });
        await page.addScriptTag({ content: PAGE_HELPERS });
        const r = await withTimeout(page.evaluate(`(${fn.toString()})(${JSON.stringify(src)})`), TEST_TIMEOUT_MS, testName);
        const errors = [...(r.errors || []), ...console_errors];
        if (r.skipped) {
          report(testName, 'ignored', r.skipped);
        } else if (errors.length) {
          report(testName, 'failed', JSON.stringify({ ...r, errors }));
        } else {
          report(testName, 'passed', JSON.stringify(r));
        }
      } catch (e) {
        report(testName, 'failed', `${String(e.message || e).split('\n')[0]} ${console_errors.join('; ')}`);
      } finally {
        await page.close();
      }
    }
  }
  await browser.close();
  server.close();
  const secs = ((Date.now() - started) / 1000).toFixed(2);
  const status = results.failed ? 'FAILED' : 'ok';
  console.log(`test result: ${status}. ${results.passed} passed; ${results.failed} failed; ${results.ignored} ignored; 0 measured; 0 filtered out; finished in ${secs}s`);
  return results.failed ? 1 : 0;
}

process.exit(await main());
