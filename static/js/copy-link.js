// Copy buttons: <button data-copy-target="input-id" data-copy-feedback="region-id"> copies a value.
import { gettext } from './i18n.js';

const FEEDBACK_MS = 4_000;

async function copy(input) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(input.value);
      return true;
    } catch {
      // Permission refused: fall back to selecting the text.
    }
  }
  input.focus();
  input.select();
  try {
    return document.execCommand('copy');
  } catch {
    return false;
  }
}

for (const button of document.querySelectorAll('[data-copy-target]')) {
  const input = document.getElementById(button.dataset.copyTarget);
  const feedback = document.getElementById(button.dataset.copyFeedback);
  let timer = 0;
  input.addEventListener('focus', () => input.select());
  button.addEventListener('click', async () => {
    const copied = await copy(input);
    clearTimeout(timer);
    feedback.textContent = copied
      ? gettext('Copied')
      : gettext('Selected: press Ctrl+C (⌘C on a Mac) to copy');
    timer = setTimeout(() => {
      feedback.textContent = '';
    }, FEEDBACK_MS);
  });
}
