import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("event", {
  doc: "A change to an object, as seen by event.from.",
  write: "pool-operator",
  accessors: false,
  persistent: false,
  fields: [
    rt("snapshot", "<class> record"),
    cn("id", "int"),
    cn("timestamp", "datetime", { lifecycle: "deprecated" }),
    cn("class", "string"),
    cn("operation", "enum event_operation"),
    cn("ref", "string"),
    cn("obj_uuid", "string", { lifecycle: "deprecated" }),
  ],
  messages: [
    msg("inject", "string class, string ref", "string", "read-only+cert", { async: false }),
    msg("get_current_id", "", "int", "read-only+cert", { async: false }),
    msg("from", "string set classes, string token, float timeout", "an event batch", "read-only+cert", { async: false }),
    msg("next", "", "event record set", "read-only+cert", { async: false, lifecycle: "deprecated" }),
    msg("unregister", "string set classes", "void", "read-only+cert", { async: false, lifecycle: "deprecated" }),
    msg("register", "string set classes", "void", "read-only+cert", { async: false, lifecycle: "deprecated" }),
  ],
});
