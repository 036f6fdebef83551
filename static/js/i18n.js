// The browser's words, in the person's language: Django's JavaScript catalog (/jsi18n/, the
// `javascript-catalog` URL, a classic script that templates/base.html loads before any module)
// defines `django.gettext` and its kin. These wrappers use it, and fall back to the English
// msgid when it did not load, so a page never breaks for want of a translation.
//
// Import them under these very names (gettext, ngettext, pgettext): `makemessages -d djangojs`
// finds the strings by them. Put values in with named placeholders, `%(name)s`, through
// `interpolate`: the word order differs between languages.

const catalog = () => globalThis.django ?? null;

/** The translation of `msgid`, or `msgid` itself. */
export function gettext(msgid) {
  const django = catalog();
  return typeof django?.gettext === 'function' ? django.gettext(msgid) : msgid;
}

/** The singular or plural form for `count`, in the person's language. */
export function ngettext(singular, plural, count) {
  const django = catalog();
  if (typeof django?.ngettext === 'function') return django.ngettext(singular, plural, count);
  return count === 1 ? singular : plural;
}

/** The translation of `msgid` in `context` (the same English, said differently elsewhere). */
export function pgettext(context, msgid) {
  const django = catalog();
  return typeof django?.pgettext === 'function' ? django.pgettext(context, msgid) : msgid;
}

/** `template` with its `%(name)s` placeholders filled in from `values`. */
export function interpolate(template, values = {}) {
  return template.replace(/%\((\w+)\)s/g, (placeholder, name) =>
    name in values ? String(values[name]) : placeholder,
  );
}

/** The page's language (templates/base.html's `<html lang>`), for Intl formats. */
export function language() {
  return document.documentElement.lang || undefined;
}
