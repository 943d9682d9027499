// Photo folders in node, the twin of tina_edge/runtime/evaluation.py (walk_images, labelled_images)
// and of the directory rules of runtime/images.py expand_items and photo_prompts.class_folders:
// - evaluate's DIR: one folder per class (matched to labels by classKey), each walked recursively in
//   sorted order, hidden entries skipped, only image suffixes used; nothing dropped silently (what
//   was skipped or could not be used is returned, with the reason);
// - a photo prompt's folder: the regular files directly inside it (not recursed), every one a photo.
// Only stat() is called, never open(), so a FIFO named .jpg cannot block a walk.
import fs from "node:fs";
import path from "node:path";
import { ImageError } from "./errors.mjs";
import { classKey, pyRepr } from "./prompt.mjs";

/** Suffixes taken from walked directories (Python's IMAGE_SUFFIXES). */
export const IMAGE_SUFFIXES = [".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"];

/** Python's sorted() on names: code point order (JS sorts UTF-16 units). */
export function byCodePoint(a, b) {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
}

const STRERROR = { EACCES: "Permission denied", EPERM: "Operation not permitted", ENOTDIR: "Not a directory", EIO: "Input/output error" };
const strerror = (e) => STRERROR[e.code] ?? e.code ?? e.message;
const visible = (dir) => fs.readdirSync(dir).filter((n) => !n.startsWith(".")).sort(byCodePoint);
const isImage = (p) => IMAGE_SUFFIXES.includes(path.extname(p).toLowerCase());

function unusableReason(e) {
  if (e.code === "ELOOP") return "a symbolic link loop";
  if (e.code === "ENOENT") return "a broken symbolic link";
  return `cannot be read (${strerror(e)})`;
}

/** Everything under root, recursively (a folder's files, then its sub-folders): {images, other, unusable: [[path, why]]}. */
export function walkImages(root) {
  const out = { images: [], other: [], unusable: [] };
  const key = (st) => `${st.dev}:${st.ino}`;
  let st;
  try { st = fs.statSync(root, { bigint: true }); } catch (e) { out.unusable.push([root, unusableReason(e)]); return out; }
  const visited = new Set([key(st)]);
  const stack = [[root, new Set(visited)]];
  while (stack.length) {
    const [d, ancestors] = stack.pop();
    let names;
    try { names = visible(d); } catch (e) { out.unusable.push([d, `a folder that cannot be listed (${strerror(e)})`]); continue; }
    const subdirs = [];
    for (const name of names) {
      const p = path.join(d, name);
      try { st = fs.statSync(p, { bigint: true }); } catch (e) { out.unusable.push([p, unusableReason(e)]); continue; }
      if (st.isDirectory()) {
        if (ancestors.has(key(st))) out.unusable.push([p, "a symbolic link loop (it leads back to a folder above it)"]);
        else if (visited.has(key(st))) out.unusable.push([p, "a second link to a folder already walked"]);
        else { visited.add(key(st)); subdirs.push([p, new Set([...ancestors, key(st)])]); }
      } else if (st.isFile()) (isImage(p) ? out.images : out.other).push(p);
      else out.unusable.push([p, "not a regular file (a pipe, socket or device)"]);
    }
    stack.push(...subdirs.reverse());
  }
  return out;
}

const isDir = (p) => { try { return fs.statSync(p).isDirectory(); } catch { return false; } };

/** root's own entries, not recursed: {folders, loose, unusable}. */
function topLevel(root) {
  const out = { folders: [], loose: [], unusable: [] };
  let names;
  try { names = visible(root); } catch (e) { throw new ImageError(`cannot list ${root}: ${strerror(e)}; pass a readable folder`); }
  for (const name of names) {
    const p = path.join(root, name);
    let st;
    try { st = fs.statSync(p); } catch (e) { out.unusable.push([p, unusableReason(e)]); continue; }
    if (st.isDirectory()) out.folders.push(p);
    else if (st.isFile()) out.loose.push(p);
    else out.unusable.push([p, "not a regular file (a pipe, socket or device)"]);
  }
  return out;
}

/**
 * evaluate's DIR: its sub-folders matched to `labels` (classKey: case, width, spacing, "_" and "-"
 * ignored), each walked. {files, targets, folders: {label: folder name}, unmatchedFolders,
 * missingLabels, skippedFiles, unusable}; ImageError for a DIR evaluate cannot use (Python's words).
 */
export function labelledImages(root, labels) {
  root = path.normalize(root).replace(/(.)\/+$/, "$1");
  if (!isDir(root)) throw new ImageError(`${root} is not a directory; pass a folder that holds one folder per class`);
  const keys = new Map();
  labels.forEach((lab, i) => {
    const j = keys.get(classKey(lab));
    if (j !== undefined) {
      throw new ImageError(`the model's labels ${pyRepr(labels[j])} and ${pyRepr(lab)} are one class name (case, width, ` +
        "spacing, '_' and '-' are ignored), so no folder can be matched to one of them; evaluate a model whose labels are distinct");
    }
    keys.set(classKey(lab), i);
  });
  const { folders, loose, unusable } = topLevel(root);
  const matched = new Map();
  const unmatchedFolders = [];
  for (const f of folders) {
    const i = keys.get(classKey(path.basename(f)));
    if (i === undefined) unmatchedFolders.push(path.basename(f));
    else if (matched.has(i)) {
      throw new ImageError(`folders ${pyRepr(path.basename(matched.get(i)))} and ${pyRepr(path.basename(f))} of ${root} both ` +
        `match the label ${pyRepr(labels[i])}; keep one`);
    } else matched.set(i, f);
  }
  if (!matched.size) {
    const seen = unmatchedFolders.length ? unmatchedFolders.slice(0, 10).join(", ") + (unmatchedFolders.length > 10 ? " ..." : "") : "none";
    throw new ImageError(`no folder of ${root} matches a label of the model (${labels.join(", ")}); folders found: ${seen}. ` +
      "Pass the folder that holds one folder per class (e.g. DIR/test)");
  }
  const files = [], targets = [], skippedFiles = [...loose];
  const order = [...matched.keys()].sort((a, b) => a - b);
  for (const i of order) {
    const found = walkImages(matched.get(i));
    files.push(...found.images);
    targets.push(...found.images.map(() => i));
    skippedFiles.push(...found.other);
    unusable.push(...found.unusable);
  }
  if (!files.length) throw new ImageError(`the class folders of ${root} hold no image files (suffixes ${IMAGE_SUFFIXES.join(", ")})`);
  return { root, files, targets, folders: Object.fromEntries(order.map((i) => [labels[i], path.basename(matched.get(i))])),
    unmatchedFolders, missingLabels: labels.filter((_, i) => !matched.has(i)), skippedFiles, unusable };
}

/** --from-folders DIR: {label: its folder} for DIR's sub-folders, sorted (Python's class_folders). */
export function classFolders(root) {
  root = path.normalize(root).replace(/(.)\/+$/, "$1");
  if (!isDir(root)) throw new ImageError(`${root} is not a directory; pass a folder that holds one folder of photos per class`);
  const { folders } = topLevel(root);
  if (!folders.length) throw new ImageError(`${root} holds no class folders; make one sub-folder of photos per class`);
  return Object.fromEntries(folders.map((f) => [path.basename(f), f]));
}

/** A photo prompt's files: a file as given, a folder's regular files directly inside (Python's expand_items). */
export function photoFiles(item) {
  let st;
  try { st = fs.statSync(item); } catch { st = null; }
  if (st?.isFile()) return [item];
  if (!st) throw new ImageError(`image ${item} does not exist`); // a broken link too, as Python's Path.exists() says
  if (!st.isDirectory()) throw new ImageError(`${item} is not a regular file; pass image files or directories`);
  const dir = path.normalize(item).replace(/(.)\/+$/, "$1");
  let names;
  try { names = visible(dir); } catch (e) { throw new ImageError(`cannot list directory ${dir}: ${strerror(e)}`); }
  const files = [];
  for (const n of names) {
    const p = path.join(dir, n);
    if (isDir(p)) continue;
    let regular = false;
    try { regular = fs.statSync(p).isFile(); } catch { /* a broken link */ }
    if (!regular) {
      throw new ImageError(`${p} is not a regular file (a pipe, socket, device or broken link); remove it from the folder or pass the image files`);
    }
    files.push(p);
  }
  if (!files.length) throw new ImageError(`directory ${dir} holds no image files`);
  return files;
}
