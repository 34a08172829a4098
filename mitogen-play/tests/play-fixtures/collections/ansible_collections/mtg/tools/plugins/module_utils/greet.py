# A collection's module_utils, shipped with the module that imports it.
def greeting(name):
    return 'hello, %s' % name
