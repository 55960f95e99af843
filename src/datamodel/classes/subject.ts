import { defineClass, rt, cn, rw, msg } from '../dsl.ts';

export default defineClass("subject", {
  doc: "A user or group allowed to log in, with the roles given to it.",
  write: "pool-operator",
  ctor: "pool-admin",
  fields: [
    rt("uuid", "string"),
    cn("subject_identifier", "string"),
    cn("other_config", "(string -> string) map"),
    rt("roles", "role ref set"),
  ],
  messages: [
    msg("set_password", "subject ref self, string new_password", "void", "pool-admin", { async: false, extension: true, doc: "Xenon: sets the password of a local account (subject_identifier 'local:<name>')." }),
    msg("get_permissions_name_label", "subject ref self", "string set", "read-only+cert", { async: false }),
    msg("remove_from_roles", "subject ref self, role ref role", "void", "pool-admin"),
    msg("add_to_roles", "subject ref self, role ref role", "void", "pool-admin"),
  ],
});
