/* The module map names this file; it includes the installed header from pkg-config's include path
   rather than a copy, so the module cannot drift from the library it links. */
#include <sda.h>
