// The node CLI's photo prompts (issue 21), the twin of tina_edge/cli/personalize_cmd.py's --images
// and cli/photo_options.py's --from-folders: option parsing, the class list from DIR's sub-folders,
// the photo files decoded (`decode`: readImage) into the {class: [pixels]} that personalize takes,
// and what the summary says each class was built from. Refusals are Python's, word for word.
import fs from "node:fs";
import path from "node:path";
import { ImageError, ModelFileError, PromptError } from "./errors.mjs";
import { classKey, pyRepr } from "./prompt.mjs";
import { classFolders, photoFiles } from "./image-folders.mjs";
import { MAX_PHOTOS_PER_CLASS } from "./photos.mjs";

/** --images "cat=a.jpg,b.jpg" (repeatable; repeats for one class add photos) -> [[name, [files]], ...]. */
export function imagesOption(items = []) {
  const out = new Map();
  for (const item of items) {
    const at = item.indexOf("=");
    const name = at < 0 ? "" : item.slice(0, at);
    const files = at < 0 ? [] : item.slice(at + 1).split(",").map((f) => f.trim()).filter(Boolean);
    if (at < 0 || !name.trim() || !files.length) {
      throw new PromptError(`--images takes NAME=IMAGE[,IMAGE...], e.g. --images cat=cat1.jpg,cat2.jpg; got ${pyRepr(item)}`);
    }
    if (!out.has(classKey(name))) out.set(classKey(name), [name.trim(), []]);
    out.get(classKey(name))[1].push(...files);
  }
  return [...out.values()];
}

/** --from-folders DIR: {classes, images} from DIR's sub-folders (sorted), plus --images classes without a folder. */
export function folderClasses(root, classes, images) {
  if (classes.length) throw new PromptError("--from-folders takes the classes from DIR's sub-folders; leave out CLASSES");
  const found = classFolders(root);
  const keys = new Map(Object.keys(found).map((n) => [classKey(n), n]));
  const out = Object.entries(found).map(([n, dir]) => [n, [dir]]);
  for (const [name, files] of images) {
    if (keys.has(classKey(name))) {
      throw new PromptError(`photos for the class ${pyRepr(keys.get(classKey(name)))} are given twice (its folder in ` +
        `${path.normalize(root).replace(/(.)\/+$/, "$1")} and --images); give them once`);
    }
    out.push([name, files]);
  }
  return { classes: out.map(([n]) => n), images: out };
}

/**
 * The photos decoded, {label: [{data, width, height}]}, class by class in label order (Python's
 * order of work): every --images name must be one of `names` (the parsed classes); at most
 * MAX_PHOTOS_PER_CLASS per class, counted before anything is decoded.
 */
export async function decodePhotoPrompts(names, images, decode) {
  const keys = new Map(names.map((n, i) => [classKey(n), i]));
  const byClass = new Map();
  for (const [name, items] of images) {
    const i = keys.get(classKey(name));
    if (i === undefined) {
      throw new PromptError(`--images names ${pyRepr(name.trim())}, which is not one of the classes (${names.join(", ")}); ` +
        "name it in CLASSES too, where the label order is set");
    }
    byClass.set(i, items);
  }
  const out = [];
  for (const i of [...byClass.keys()].sort((a, b) => a - b)) {
    const inClass = (e) => (e instanceof ImageError ? new ImageError(`class ${pyRepr(names[i])}: ${e.message}`) : e);
    let files;
    try { files = byClass.get(i).flatMap(photoFiles); } catch (e) { throw inClass(e); }
    if (files.length > MAX_PHOTOS_PER_CLASS) {
      throw new PromptError(`the class ${pyRepr(names[i])} has ${files.length} photos; give at most ${MAX_PHOTOS_PER_CLASS}`);
    }
    const pixels = [];
    for (const f of files) {
      try { pixels.push(await decode(f)); } catch (e) { throw inClass(e); }
    }
    out.push([names[i], pixels]);
  }
  return Object.fromEntries(out);
}

/** What personalize reads that an output may never replace: [[path, what], ...] (Python's _reads). */
export function photoReads(images, fromFolders) {
  const out = images.flatMap(([, files]) => files.map((f) => [f, "an --images example"]));
  if (fromFolders !== undefined) out.push([fromFolders, "the --from-folders folder"]);
  return out;
}

const real = (p) => {
  try { return fs.realpathSync(p); } catch { return path.join(real(path.dirname(path.resolve(p))), path.basename(p)); }
};

/** Refuse an output that is, or is inside, a photo the command reads (Python's check_outputs wording). */
export function checkNotPhotos(outputs, reads) {
  for (const [file, what] of outputs) {
    const target = real(file);
    const exists = fs.existsSync(file);
    for (const [src, srcWhat] of reads) {
      if (!fs.existsSync(src)) continue;
      const s = real(src);
      if (target === s || target.startsWith(s + path.sep)) {
        const where = !fs.statSync(s).isDirectory() ? srcWhat : exists ? `a file of ${srcWhat}` : `inside ${srcWhat}`;
        throw new ModelFileError(`${what} ${file} is ${where} (${s}); --force replaces outputs, never what the command reads ` +
          "or installs: choose another path");
      }
    }
  }
}

/** Per class what its rows were built from: 'name', "description '...'", 'N photos', or a mix (Python's built_from). */
export function builtFrom(labels, texts, photos) {
  photos = photos ?? {};
  return Object.fromEntries(labels.map((n, i) => {
    const t = texts && i < texts.length ? texts[i] : n;
    const parts = t === null ? [] : [t === n ? "name" : `description ${pyRepr(t)}`];
    if (Object.hasOwn(photos, n)) parts.push(`${photos[n]} photo${photos[n] !== 1 ? "s" : ""}`);
    return [n, parts.join(" + ") || "name"];
  }));
}
