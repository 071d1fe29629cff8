"""The processing desk: the pages radiographers and physicists use every day (issue 11).

Series for processing, jobs with their stage timeline and QC picture, the processing log, the
datastore, ZIP uploads, templates and rulesets. Views are thin: reads come from the apps'
selectors, every action is one permission-checked service call.
"""
