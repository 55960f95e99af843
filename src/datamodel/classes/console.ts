import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("console", {
  doc: "A way to reach a VM's console (VNC or text).",
  write: "vm-admin",
  ctor: "vm-admin",
  fields: [
    rt("uuid", "string"),
    rt("protocol", "enum console_protocol"),
    rt("location", "string"),
    rt("VM", "VM ref"),
    rw("other_config", "(string -> string) map"),
  ],
  messages: [
  ],
});
