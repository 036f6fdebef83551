// Tells the server the browser's time zone (an IANA name such as "Asia/Seoul") in the `timezone`
// cookie, so server-rendered dates and times are in the reader's zone (accounts/middleware.py).
// IANA names hold only letters, digits, "/", "_", "-" and "+": safe in a cookie as they are.
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
if (zone && !document.cookie.split("; ").includes(`timezone=${zone}`)) {
  document.cookie = `timezone=${zone}; path=/; max-age=31536000; samesite=lax`;
}
