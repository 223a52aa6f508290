/**
 * Bounding what outside input can put into a log line or an error message: a 60 KB experiment name or a
 * 10 MB configuration value is quoted by its first characters and the count of the rest, never whole.
 */

/** Characters of any one input value quoted in a line. */
export const MAX_QUOTED_CHARS = 200;
/** Characters of a log message or error text of ours (which quotes input clipped), at most. */
export const MAX_MESSAGE_CHARS = 2048;
/** Characters of a whole log line, at most. */
export const MAX_LINE_CHARS = 4096;

/** `text` if it is short enough, else its first `max` characters and how many were left out. */
export function clip(text: string, max = MAX_QUOTED_CHARS): string {
  if (text.length <= max) return text;
  // Never cut a surrogate pair in two: the result must stay valid text.
  let end = max;
  const code = text.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end--;
  return `${text.slice(0, end)}…(+${text.length - end} chars)`;
}

/** Input quoted for a message: JSON string syntax (control characters escaped), clipped. */
export function quoted(text: string, max = MAX_QUOTED_CHARS): string {
  return JSON.stringify(clip(text, max));
}
