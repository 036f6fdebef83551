// Devices: which camera, microphone and speaker the call uses. The person picks them on the
// pre-join screen, where a meter shows their microphone's level, or during the call (the call
// swaps tracks without renegotiating: call.js, switchDevice). The choice is remembered in this
// browser (localStorage, by deviceId; a remembered device that is gone gives way to the default),
// and a device in use that disappears gives way to another one of its kind, with a notice.

import { gettext, interpolate } from './i18n.js';

// Every string the person sees, in one place, from Django's JavaScript catalog (i18n.js).
const TEXT = {
  unnamedVideo: () => gettext('Camera %(n)s'),
  unnamedAudio: () => gettext('Microphone %(n)s'),
  unnamedSpeaker: () => gettext('Speaker %(n)s'),
  yourVideo: () => gettext('Your camera'),
  yourAudio: () => gettext('Your microphone'),
  noneFound: () => gettext('None found'),
  systemDefault: () => gettext('System default'),
  switched: () => gettext('%(old)s was disconnected. Now using %(new)s.'),
  noOtherVideo: () => gettext('%(old)s was disconnected, and there is no other camera.'),
  noOtherAudio: () => gettext('%(old)s was disconnected, and there is no other microphone.'),
  switchFailed: () => gettext('Could not switch to %(device)s.'),
  speakerFailed: () => gettext('Could not play the sound through %(device)s.'),
};

/** A user-visible string, in the person's language, with its `%(name)s` placeholders filled in. */
function t(key, values = {}) {
  return interpolate(TEXT[key](), values);
}

// Per kind of choice: what enumerateDevices calls it, and its words.
const KINDS = {
  video: {
    device: 'videoinput',
    unnamed: 'unnamedVideo',
    yours: 'yourVideo',
    noOther: 'noOtherVideo',
  },
  audio: {
    device: 'audioinput',
    unnamed: 'unnamedAudio',
    yours: 'yourAudio',
    noOther: 'noOtherAudio',
  },
  speaker: { device: 'audiooutput', unnamed: 'unnamedSpeaker' },
};
const STORAGE_PREFIX = 'conference.device.';
const METER_EVERY_MS = 50;
const METER_FLOOR_DB = -60; // this level and below shows as an empty meter
const METER_FALL = 0.85; // the meter falls back gently between sounds

function remembered(kind) {
  try {
    return localStorage.getItem(STORAGE_PREFIX + kind) || '';
  } catch {
    return ''; // storage is off (a privacy setting): nothing is remembered
  }
}

function remember(kind, deviceId) {
  try {
    localStorage.setItem(STORAGE_PREFIX + kind, deviceId);
  } catch {
    // storage is off: the choice lasts for this page only
  }
}

export class Devices {
  #mode = 'off'; // 'prejoin' (pickers open, meter on), 'call' (pickers behind a button), 'off'
  #list = []; // the last enumerateDevices()
  #watched = new WeakSet(); // local tracks whose `ended` we listen to
  #meter = null; // {context, timer} while the level meter runs
  #checking = Promise.resolve(); // device checks run one after the other

  /**
   * @param {object} options
   * @param {HTMLElement} options.root the "Devices" block of templates/rooms/room_detail.html
   * @param {import('./call.js').Call} options.call
   * @param {(text: string) => void} options.notice tells the person something
   * @param {() => void} [options.changed] called after a switch (the call's tracks changed)
   */
  constructor({ root, call, notice, changed = () => {} }) {
    this.root = root;
    this.call = call;
    this.notice = notice;
    this.changed = changed;
    this.toggle = document.getElementById('devices-button'); // room.js puts it in the button bar
    this.panel = root.querySelector('#devices-panel');
    this.selects = {
      video: root.querySelector('#camera-select'),
      audio: root.querySelector('#microphone-select'),
      speaker: root.querySelector('#speaker-select'),
    };
    this.level = root.querySelector('#microphone-level');
    const media = navigator.mediaDevices;
    this.supported = Boolean(media?.enumerateDevices && media.getUserMedia);
    // Choosing the speaker needs HTMLMediaElement.setSinkId (not every browser has it).
    this.canPickSpeaker = 'setSinkId' in HTMLMediaElement.prototype;
    root.querySelector('#speaker-field').hidden = !this.canPickSpeaker;

    for (const kind of ['audio', 'video']) call.preferred[kind] = remembered(kind);
    if (this.canPickSpeaker && remembered('speaker')) call.setSpeaker(remembered('speaker'));

    this.toggle.addEventListener('click', () => this.#setOpen(this.panel.hidden));
    for (const [kind, select] of Object.entries(this.selects)) {
      select.addEventListener('change', () => this.choose(kind, select.value));
    }
    navigator.mediaDevices?.addEventListener?.('devicechange', () => this.#check());
    // A page may not start sound before the person does something: the meter waits for that.
    const resume = () => {
      if (this.#meter?.context.state === 'suspended') this.#meter.context.resume().catch(() => {});
    };
    for (const type of ['pointerdown', 'keydown']) document.addEventListener(type, resume, true);
  }

  /** The chosen device ids ('' for the browser's default). */
  get chosen() {
    const { audio, video } = this.call.preferred;
    return { video, audio, speaker: this.call.sinkId };
  }

  /** 'prejoin': the pickers open, with the level meter; 'call': behind the button; 'off'. */
  setMode(mode) {
    if (mode === this.#mode) return;
    this.#mode = mode;
    const off = mode === 'off' || !this.supported;
    this.toggle.hidden = off;
    if (mode !== 'prejoin') this.#stopMeter();
    this.#setOpen(!off && mode === 'prejoin');
    if (off) return;
    this.call.preview().then(async () => {
      await this.refresh();
      if (this.#mode === 'prejoin' && !this.#meter) this.#startMeter();
    });
  }

  #setOpen(open) {
    this.panel.hidden = !open;
    // Folded, the block takes no room (unless it still holds the button).
    this.root.hidden = !open && !this.root.contains(this.toggle);
    this.toggle.setAttribute('aria-expanded', String(open));
  }

  /** The live local track of a kind ('audio' or 'video'). */
  #track(kind) {
    return this.call.localStream?.getTracks().find((track) => track.kind === kind) ?? null;
  }

  #ofKind(kind, list = this.#list) {
    return list.filter((device) => device.kind === KINDS[kind].device && device.deviceId);
  }

  #labelOf(kind, deviceId) {
    const found = this.#ofKind(kind);
    const index = found.findIndex((device) => device.deviceId === deviceId);
    return found[index]?.label || t(KINDS[kind].unnamed, { n: index + 1 });
  }

  /** List the devices again and show which ones are in use. */
  async refresh() {
    try {
      this.#list = await navigator.mediaDevices.enumerateDevices();
    } catch (error) {
      console.warn('Could not list the devices', error);
      return;
    }
    for (const kind of Object.keys(KINDS)) this.#render(kind);
    for (const kind of ['audio', 'video']) {
      const track = this.#track(kind);
      if (!track || this.#watched.has(track)) continue;
      this.#watched.add(track);
      track.addEventListener('ended', () => this.#check()); // unplugged, or taken away
    }
  }

  #render(kind) {
    const select = this.selects[kind];
    const found = this.#ofKind(kind);
    const options = found.map(
      (device, index) =>
        new Option(device.label || t(KINDS[kind].unnamed, { n: index + 1 }), device.deviceId),
    );
    if (!found.length) {
      options.push(new Option(t(kind === 'speaker' ? 'systemDefault' : 'noneFound'), ''));
    }
    select.replaceChildren(...options);
    select.disabled = !found.length;
    const track = this.#track(kind);
    const inUse = kind === 'speaker' ? this.call.sinkId || 'default' : track?.getSettings().deviceId;
    if (found.some((device) => device.deviceId === inUse)) select.value = inUse;
  }

  /** The person picked a device: remember it and use it now. */
  async choose(kind, deviceId) {
    remember(kind, deviceId);
    if (kind === 'speaker') {
      try {
        await this.call.setSpeaker(deviceId);
      } catch (error) {
        console.warn('Could not change the speaker', error);
        this.notice(t('speakerFailed', { device: this.#labelOf(kind, deviceId) }));
      }
      return;
    }
    try {
      await this.call.switchDevice(kind, deviceId);
    } catch (error) {
      console.warn(`Could not switch the ${kind} device`, error);
      this.notice(t('switchFailed', { device: this.#labelOf(kind, deviceId) }));
    }
    await this.#switched(kind);
  }

  async #switched(kind) {
    await this.refresh();
    if (kind === 'audio' && this.#mode === 'prejoin') this.#startMeter();
    this.changed();
  }

  /** The devices changed (or a track ended): a device in use that is gone gives way. */
  #check() {
    this.#checking = this.#checking.then(() => this.#checkNow()).catch((error) => {
      console.warn('Could not check the devices', error);
    });
    return this.#checking;
  }

  async #checkNow() {
    if (this.#mode === 'off' || !this.supported) return;
    const list = await navigator.mediaDevices.enumerateDevices();
    this.#list = list;
    for (const kind of ['audio', 'video']) {
      const track = this.#track(kind);
      if (!track) continue;
      const id = track.getSettings().deviceId;
      const present = this.#ofKind(kind, list).some((device) => device.deviceId === id);
      if (present && track.readyState === 'live') continue;
      const old = track.label || t(KINDS[kind].yours);
      const others = this.#ofKind(kind, list).filter((device) => device.deviceId !== id);
      const next =
        others.find((device) => device.deviceId === remembered(kind)) ??
        others.find((device) => device.deviceId === 'default') ??
        others[0];
      if (!next) {
        this.notice(t(KINDS[kind].noOther, { old }));
        continue;
      }
      try {
        await this.call.switchDevice(kind, next.deviceId);
        this.notice(t('switched', { old, new: this.#labelOf(kind, next.deviceId) }));
      } catch (error) {
        console.warn(`Could not switch the ${kind} device`, error);
        this.notice(t(KINDS[kind].noOther, { old }));
      }
      await this.#switched(kind);
    }
    for (const kind of Object.keys(KINDS)) this.#render(kind);
  }

  /** The microphone's level, on the pre-join screen: Web Audio reads the local track. */
  #startMeter() {
    this.#stopMeter();
    const track = this.#track('audio');
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!track || !Context) return;
    let context;
    try {
      context = new Context();
      const analyser = context.createAnalyser();
      analyser.fftSize = 1024;
      context.createMediaStreamSource(new MediaStream([track])).connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      let shown = 0;
      const timer = setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const sample of samples) sum += sample * sample;
        const rms = Math.sqrt(sum / samples.length);
        const db = rms > 0 ? 20 * Math.log10(rms) : METER_FLOOR_DB;
        const level = Math.min(1, Math.max(0, 1 - db / METER_FLOOR_DB));
        shown = Math.max(level, shown * METER_FALL);
        this.level.value = shown;
      }, METER_EVERY_MS);
      this.#meter = { context, timer };
      this.level.parentElement.hidden = false;
      context.resume().catch(() => {}); // may wait for a click or a key (see the constructor)
    } catch (error) {
      console.warn('Could not start the level meter', error);
      context?.close().catch(() => {});
    }
  }

  #stopMeter() {
    if (this.#meter) {
      clearInterval(this.#meter.timer);
      this.#meter.context.close().catch(() => {});
      this.#meter = null;
    }
    this.level.value = 0;
    this.level.parentElement.hidden = true;
  }
}
